package tests

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
)

// A GUID conflict made on purpose: with the replica's Cyrus and daemon
// stopped, the record of UID 7 in the replica's cyrus.index gets another
// GUID (CRCs and synccrcs.basic recomputed, so the index is one Cyrus
// accepts). Flag changes on the primary then reach every other UID, but
// UID 7 is never overwritten on the replica, and the mismatch is reported
// in the replica daemon's log and metrics.
func TestGUIDConflictNeverOverwritten(t *testing.T) {
	const uid = 7
	s := newStory(t, pairOpts())
	if err := s.p.StopServe(false); err != nil {
		t.Fatal(err)
	}
	if err := s.p.Replica.Stop(); err != nil {
		t.Fatal(err)
	}
	primaryGUID := s.record(s.p.Primary, uid).GUID
	fake := primaryGUID
	for i := range fake {
		fake[i] ^= 0x5a
	}
	names := s.mailboxHeader(s.p.Replica).UserFlags
	path := filepath.Join(s.mailboxDir(s.p.Replica), "cyrus.index")
	ix := s.index(s.p.Replica)
	ix.Records[ix.FindUID(uid)].GUID = fake
	diff.Repair(ix, names)
	b, err := ix.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0); err != nil { // the file exists: mode and owner stay
		t.Fatal(err)
	}
	if err := s.p.Replica.Restart(); err != nil {
		t.Fatal(err)
	}
	metrics := freeTCP(t)
	if err := s.p.StartServe("--metrics-addr", metrics); err != nil {
		t.Fatal(err)
	}

	s.store(strconv.Itoa(uid), "+FLAGS", `\Flagged`, `\Seen`)
	s.store("6,8", "+FLAGS", `\Flagged`)
	s.store("1:20", "+FLAGS", "$Conflict")

	// Everything but UID 7 converges; UID 7 is the one difference left.
	deadline := time.Now().Add(convergeTimeout)
	var diffs []uint32
	for {
		if diffs, err = s.p.Differences(); err != nil {
			t.Fatal(err)
		}
		if slices.Equal(diffs, []uint32{uid}) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !slices.Equal(diffs, []uint32{uid}) {
		t.Fatalf("sides differ on uids %v, want exactly [%d]", diffs, uid)
	}
	s.expectReplica(uid)
	s.expectReplica(8, `\Flagged`, "$Conflict")
	if got := s.record(s.p.Replica, uid).GUID; got != fake {
		t.Fatalf("replica uid %d guid %s, want the conflicting %s left in place", uid, got, fake)
	}
	// The conflict is visible in the index headers too: synccrcs.basic
	// covers each record's GUID, so the two sides cannot agree on it.
	if pi, ri := s.indexes(); pi.Header.SyncCRCBasic == ri.Header.SyncCRCBasic {
		t.Fatalf("synccrcs.basic equal (%08x) despite the GUID conflict", pi.Header.SyncCRCBasic)
	}

	if n := metricValue(t, metrics, "indexwire_records_guid_mismatch_total"); n < 1 {
		t.Fatalf("indexwire_records_guid_mismatch_total = %v, want >= 1", n)
	}
	logged := false
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "guid mismatch") && strings.Contains(l, `"uid":7`) &&
			strings.Contains(l, primaryGUID.String()) && strings.Contains(l, fake.String()) {
			logged = true
		}
	}
	if !logged {
		t.Fatalf("no guid mismatch log line naming uid %d and both guids (%s, %s)", uid, primaryGUID, fake)
	}
}

// metricValue scrapes one unlabelled metric from a daemon's /metrics.
func metricValue(t *testing.T, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("metric %s not in %s/metrics", name, addr)
	return 0
}
