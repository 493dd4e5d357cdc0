package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/tests/pair"
)

// Cyrus's own rolling replication (sync_client -r to the replica's
// sync_server) runs beside indexwire: both write the replica's indexes for
// the same changes, under the same locks. Both sides converge, and neither
// Cyrus logs an IOERROR nor either daemon an error.
func TestBesideCyrusRollingReplication(t *testing.T) {
	s := newStory(t, pair.Options{Messages: 20, Rolling: true})
	pm, rm := syslogMark(s.p.Primary), syslogMark(s.p.Replica)

	s.store("1:3", "+FLAGS", `\Seen`)
	s.converge()
	s.store("4", "+FLAGS", "$Rolling")
	s.store("5:9", "FLAGS", `\Flagged`, `\Answered`)
	s.converge()
	s.store("10,11", "+FLAGS", `\Deleted`)
	s.expunge()
	s.store("2", "-FLAGS", `\Seen`)
	for i := range 20 {
		uid := uint32(i%8 + 12)
		op := "+FLAGS"
		if i%2 == 1 {
			op = "-FLAGS"
		}
		s.store(uidRange(uid, uid), op, `\Seen`)
	}
	s.converge()
	s.expectReplica(1, `\Seen`)
	s.expectReplica(4, "$Rolling")
	s.expectReplica(7, `\Answered`, `\Flagged`)
	if _, ok := s.replica()[10]; ok {
		t.Fatal("replica shows expunged uid 10")
	}

	// Let Cyrus's rolling sync_client work through its log, then both
	// replications have written the replica: compare again.
	waitSyncLogDrained(t, s.p.Primary.ConfigDir)
	s.converge()
	s.expectReplica(4, "$Rolling")
	noIOErrorsSince(t, s.p.Primary, pm)
	noIOErrorsSince(t, s.p.Replica, rm)
	if errs := s.daemonErrors(); len(errs) > 0 {
		t.Fatalf("daemons logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

// waitSyncLogDrained waits until Cyrus's rolling sync_client has consumed
// the primary's sync log (configdirectory/sync/log and its log-run
// working copies are gone).
func waitSyncLogDrained(t *testing.T, configDir string) {
	t.Helper()
	deadline := time.Now().Add(convergeTimeout)
	for {
		var pending []string
		_ = filepath.WalkDir(filepath.Join(configDir, "sync"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), "log") {
				pending = append(pending, p)
			}
			return nil
		})
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rolling sync_client did not consume its log in %v: %v", convergeTimeout, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
