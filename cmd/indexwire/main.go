// Command indexwire replicates Cyrus IMAP mailbox index changes, record by
// record, from a primary to a standby over QUIC.
//
// Usage:
//
//	indexwire inspect [--json] PATH       decode a cyrus.index (or a mailbox directory)
//	indexwire diff [--json] OLD NEW       record deltas between two cyrus.index files
//	indexwire keygen --dir DIR            make a key pair and print its fingerprint
//	indexwire mount [flags] MOUNTPOINT    FUSE overlay over a Cyrus spool (primary)
//	indexwire serve [flags]               apply batches to a replica spool
//	indexwire status [flags]              show peers, positions and lag
//	indexwire linktest serve|run|relay    measure or impair the QUIC path to a peer
//
// Run `indexwire COMMAND -h` for the flags of a command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands []command

func register(c command) { commands = append(commands, c) }

// errUsage marks a command-line mistake: exit status 2.
var errUsage = errors.New("usage")

// exitError carries a specific exit status with an already printed message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: indexwire COMMAND [flags] [args]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		var ee exitError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ee):
			return ee.code
		case errors.Is(err, errUsage):
			fmt.Fprintf(stderr, "indexwire %s: %v\n", c.name, err)
			return 2
		default:
			fmt.Fprintf(stderr, "indexwire %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "indexwire: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("indexwire "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args allowing flags after positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, exitError{2} // the flag package printed the error and the usage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
