// Package tests holds indexwire's end-to-end scenarios: a real Cyrus 3.6
// primary whose partition is the indexwire overlay, a real Cyrus replica,
// and both daemons as processes linked by QUIC on 127.0.0.1.
package tests

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/indexwire/indexwire/tests/cyrustest"
	"github.com/indexwire/indexwire/tests/pair"
)

// binary is the indexwire binary built once for all scenarios.
var binary string

func TestMain(m *testing.M) {
	if why := cyrustest.Available(); why != "" || os.Getuid() != 0 {
		fmt.Println("tests: end-to-end scenarios need root, /dev/fuse and Cyrus:", why)
		os.Exit(m.Run()) // every test skips itself
	}
	dir, err := os.MkdirTemp("", "indexwire-bin-")
	if err != nil {
		panic(err)
	}
	binary, err = pair.Build(context.Background(), dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startPair starts a deployment for one scenario and stops it at the end;
// the daemons' logs are shown when the scenario fails.
func startPair(t *testing.T, opts pair.Options) *pair.Pair {
	t.Helper()
	return startPairLogs(t, opts, &lockedBuffer{})
}

// startPairLogs is startPair with the daemons' output collected in logs.
func startPairLogs(t *testing.T, opts pair.Options, logs *lockedBuffer) *pair.Pair {
	t.Helper()
	if binary == "" {
		t.Skip("end-to-end scenarios need root, /dev/fuse and Cyrus")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	opts.Binary = binary
	opts.Log = logs
	p, err := pair.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("start pair: %v\n%s", err, logs.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
		if err := p.Close(); err != nil {
			t.Logf("close pair: %v", err)
		}
	})
	return p
}
