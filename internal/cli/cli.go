// Package cli is agentapi's command line: it parses sub-commands and wires the
// program's parts together. Run is the whole program; main only adds signals.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/agentapi/agentapi/internal/config"
	"github.com/agentapi/agentapi/internal/tier"
)

// Version is the build's version, set with -ldflags "-X ...cli.Version=v1.2.3".
var Version = "dev"

// envFile is read from the working directory.
const envFile = ".env"

// usageText is the help; %[1]s stands for the tier names.
const usageText = `agentapi — an AI Agent API server

Usage:
  agentapi [serve]                       start the HTTP server (the default)
  agentapi migrate                       apply database migrations and exit
  agentapi users create --email E [--password P | --password-stdin] [--tier %[1]s] [--admin]
  agentapi users set-tier --email E --tier %[1]s
  agentapi healthcheck                   exit 0 if GET /health on HOST:PORT answers 200
  agentapi version                       print the version

Configuration comes from the environment and an optional .env file; see .env.example.
`

// Run executes one command line. getenv and the streams are passed in so tests
// run the real program without touching the process's environment.
func Run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout)
	case "migrate":
		return migrate(ctx, getenv, stdout)
	case "users":
		return users(ctx, args, getenv, stdin, stdout)
	case "healthcheck":
		return healthcheck(ctx, getenv)
	case "version":
		fmt.Fprintln(stdout, Version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, helpText())
		return nil
	default:
		fmt.Fprint(stderr, helpText())
		return fmt.Errorf("unknown command %q", cmd)
	}
}

// helpText is usageText with the tier names filled in.
func helpText() string { return fmt.Sprintf(usageText, strings.Join(tier.Names(), "|")) }

func loadConfig(getenv func(string) string) (config.Config, error) {
	return config.Load(getenv, envFile)
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// flagSet builds a FlagSet that reports errors instead of exiting.
func flagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

var errUsage = errors.New("invalid arguments (see agentapi help)")
