package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

func validTier(t string) bool { return slices.Contains(tier.Names(), t) }

// migrate applies the embedded migrations (store.Open does) and exits.
func migrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Fprintf(stdout, "migrations applied (%s)\n", st.Dialect())
	return nil
}

func users(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := flagSet("users "+sub, stdout)
	email := fs.String("email", "", "the account's email")
	tierName := fs.String("tier", "", strings.Join(tier.Names(), " or "))
	var password *string
	var passwordStdin, admin *bool
	switch sub {
	case "create":
		password = fs.String("password", "", "the password (prefer --password-stdin: arguments show in ps)")
		passwordStdin = fs.Bool("password-stdin", false, "read the password from the first line of standard input")
		admin = fs.Bool("admin", false, "make the account an administrator")
	case "set-tier":
	default:
		return fmt.Errorf("unknown users command %q: %w", sub, errUsage)
	}
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: %w", fs.Arg(0), errUsage)
	}
	addr := strings.ToLower(strings.TrimSpace(*email))
	if addr == "" {
		return errors.New("--email is required")
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.Database.URL)
	if err != nil {
		return err
	}
	defer st.Close()

	switch sub {
	case "create":
		if *tierName == "" {
			*tierName = tier.Free
		}
		if !validTier(*tierName) {
			return fmt.Errorf("--tier must be one of %s", strings.Join(tier.Names(), ", "))
		}
		pw := *password
		if *passwordStdin {
			line, err := bufio.NewReader(io.LimitReader(stdin, auth.MaxPasswordBytes+2)).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read password: %w", err)
			}
			pw = strings.TrimRight(line, "\r\n")
		}
		if p := auth.ValidatePassword(pw); p != "" {
			return fmt.Errorf("password %s", p)
		}
		hasher, err := auth.NewHasher(1)
		if err != nil {
			return err
		}
		hash, err := hasher.Hash(ctx, pw)
		if err != nil {
			return err
		}
		role := "user"
		if *admin {
			role = "admin"
		}
		u, err := st.CreateUser(ctx, store.User{Email: addr, PasswordHash: hash, Tier: *tierName, Role: role})
		if errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%s is already registered", addr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created user %s (%s, tier %s, role %s)\n", u.Email, u.ID, u.Tier, u.Role)
	case "set-tier":
		if !validTier(*tierName) {
			return fmt.Errorf("--tier must be one of %s", strings.Join(tier.Names(), ", "))
		}
		u, err := st.SetTier(ctx, addr, *tierName)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no user %s", addr)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s is now tier %s (new tokens carry it; existing tokens keep the old tier until they expire)\n", u.Email, u.Tier)
	}
	return nil
}

// healthcheck asks this host's server for /health, for container HEALTHCHECKs
// that have no curl.
func healthcheck(ctx context.Context, getenv func(string) string) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	host := cfg.Server.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	cfg.Server.Host = host
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.Server.Addr()+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /health answered %d", resp.StatusCode)
	}
	return nil
}
