package cyrustest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Available returns "" if real Cyrus instances can be started here, or the
// reason they cannot.
func Available() string {
	if os.Geteuid() != 0 {
		return "needs root (cyrus master is started as root and drops to user cyrus)"
	}
	if _, err := os.Stat(filepath.Join(BinDir, "master")); err != nil {
		return "needs Debian cyrus-imapd (" + BinDir + "/master missing): apt-get install cyrus-imapd cyrus-admin cyrus-replication sasl2-bin"
	}
	if _, err := cyrusCredential(); err != nil {
		return "needs user cyrus and group mail: " + err.Error()
	}
	return ""
}

// Skip skips t unless real Cyrus instances can be started (root and
// Debian's cyrus-imapd installed).
func Skip(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip("real Cyrus test skipped: " + why)
	}
}

// Start skips t like Skip, launches an instance and registers a cleanup
// that stops it and removes its directories. Unless opts.BaseDir is set,
// the instance lives under a fresh /tmp directory.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	Skip(t)
	in, err := Launch(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Close(); err != nil {
			t.Errorf("close cyrus instance %s: %v", in.Name, err)
		}
	})
	return in
}

// NoIOErrors fails t if the instance logged an IOERROR (or a DBERROR) to
// syslog; it does nothing when no in-process sink captures /dev/log.
func NoIOErrors(t testing.TB, in *Instance) {
	t.Helper()
	lines, ok := in.Syslog()
	if !ok {
		t.Logf("syslog of %s not captured (/dev/log served elsewhere): IOERROR check skipped", in.Name)
		return
	}
	for _, l := range lines {
		if strings.Contains(l, "IOERROR") || strings.Contains(l, "DBERROR") {
			t.Errorf("%s logged: %s", in.Name, l)
		}
	}
}
