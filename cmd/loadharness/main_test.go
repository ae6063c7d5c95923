package main

import (
	"bytes"
	"context"
	"runtime/pprof"
	"strings"
	"testing"
)

// TestRunSmoke runs the whole harness for about a second of load, so a change
// that breaks it (a gateway that no longer starts from cli.Run, a route that
// moved) fails the suite. The figures themselves are not checked: speed is
// measured by running the harness, never asserted in a test.
func TestRunSmoke(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"-quiet", "-rounds", "1", "-rates", "200", "-budget-rate", "200", "-duration", "100ms",
		"-closed-duration", "100ms", "-workers", "4", "-cache-pool", "5",
		"-stream-rate", "50", "-stream-duration", "100ms", "-stream-chunks", "3",
		"-concurrent-streams", "20", "-concurrent-chunks", "3", "-concurrent-interval", "5ms"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	for _, want := range []string{"open loop at 200 req/s", "closed loop", "budget at 200 req/s", "chat-hit", "proxy-stream"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseFlagsRefusesRemoteRedis(t *testing.T) {
	var errOut bytes.Buffer
	if _, err := parseFlags([]string{"-redis", "redis://10.0.0.5:6379/0"}, &errOut); err == nil {
		t.Fatal("a non-loopback Redis URL was accepted")
	}
	if _, err := parseFlags([]string{"-redis", "redis://127.0.0.1:6379/0"}, &errOut); err != nil {
		t.Fatalf("loopback Redis refused: %v", err)
	}
	if _, err := parseFlags([]string{"-redis", "redis+cluster://u:pw@127.0.0.1:7000,localhost:7001"}, &errOut); err != nil {
		t.Fatalf("loopback cluster refused: %v", err)
	}
	if _, err := parseFlags([]string{"-redis", "redis+cluster://127.0.0.1:7000,10.0.0.5:7001"}, &errOut); err == nil {
		t.Fatal("a cluster with a non-loopback seed was accepted")
	}
}

// TestLabelledReachesGoroutinesStartedInside checks that a goroutine
// started under labelled carries the label, as a server's connection
// goroutines must for a profile to split by target.
func TestLabelledReachesGoroutinesStartedInside(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	labelled("server", "label-test", func() {
		go func() {
			close(started)
			<-release
		}()
	})
	<-started
	var dump bytes.Buffer
	err := pprof.Lookup("goroutine").WriteTo(&dump, 1)
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dump.String(), `"server":"label-test"`) {
		t.Fatalf("no goroutine carries server=label-test:\n%s", dump.String())
	}
}
