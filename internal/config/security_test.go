package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestSecuritySettings(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil), "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.RefreshTokenTTL != 14*24*time.Hour || c.Auth.LoginAttempts != 5 || c.Server.ReadHeaderTimeout != 10*time.Second ||
		c.Auth.TrustedProxies != nil || c.Auth.SecretKeyPrevious != "" {
		t.Fatalf("defaults: refresh %v, attempts %d, header timeout %v, proxies %v, previous %q",
			c.Auth.RefreshTokenTTL, c.Auth.LoginAttempts, c.Server.ReadHeaderTimeout, c.Auth.TrustedProxies, c.Auth.SecretKeyPrevious)
	}
	c, err = Load(env(map[string]string{
		"SECRET_KEY": "new-new-new-new-new-new-new-new-new", "SECRET_KEY_PREVIOUS": "old-old-old-old-old-old-old-old-old",
		"REFRESH_TOKEN_EXPIRE_DAYS": "30", "LOGIN_ATTEMPTS": "3", "READ_HEADER_TIMEOUT": "250ms",
		"TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7 ,fd00::/8",
	}), "")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"), netip.MustParsePrefix("fd00::/8")}
	if c.Auth.RefreshTokenTTL != 30*24*time.Hour || c.Auth.LoginAttempts != 3 || c.Server.ReadHeaderTimeout != 250*time.Millisecond ||
		len(c.Auth.TrustedProxies) != 3 || c.Auth.TrustedProxies[0] != want[0] || c.Auth.TrustedProxies[1] != want[1] || c.Auth.TrustedProxies[2] != want[2] {
		t.Fatalf("set: %+v", c)
	}
	if s := c.LogValue().String(); strings.Contains(s, "old-old") {
		t.Fatalf("log value shows SECRET_KEY_PREVIOUS: %s", s)
	}

	_, err = Load(env(map[string]string{
		"SECRET_KEY": "same-same-same-same-same-same-same", "SECRET_KEY_PREVIOUS": "same-same-same-same-same-same-same",
		"REFRESH_TOKEN_EXPIRE_DAYS": "0", "LOGIN_ATTEMPTS": "many", "READ_HEADER_TIMEOUT": "0s",
		"TRUSTED_PROXIES": "10.0.0.0/8,not-a-network",
	}), "")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, name := range []string{"SECRET_KEY_PREVIOUS", "REFRESH_TOKEN_EXPIRE_DAYS", "LOGIN_ATTEMPTS", "READ_HEADER_TIMEOUT", "TRUSTED_PROXIES"} {
		if !strings.Contains(err.Error(), name+":") {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
	_, err = Load(env(map[string]string{"APP_ENV": "production", "OPENAI_API_KEY": "k", "DEMO_USER": "false",
		"SECRET_KEY": strings.Repeat("k", 32), "SECRET_KEY_PREVIOUS": "short"}), "")
	if err == nil || !strings.Contains(err.Error(), "SECRET_KEY_PREVIOUS:") {
		t.Fatalf("short previous key in production: %v", err)
	}
}
