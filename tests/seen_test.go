package tests

import (
	"slices"
	"testing"
	"time"

	"github.com/indexwire/indexwire/tests/pair"
)

// A \Seen STORE on the primary is visible over IMAP on the replica, with
// the primary's modseq, and both sides agree on every message.
func TestSeenReachesReplica(t *testing.T) {
	p := startPair(t, pairOpts())
	before, err := pair.Fetch(p.Replica, p.User())
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(before[4].Flags, `\Seen`) {
		t.Fatalf("uid 5 already seen on the replica: %+v", before[4])
	}
	c, err := p.Primary.Login(p.User())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Logout()
	if _, err := c.Select("INBOX"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := c.Store("5", "+FLAGS", `\Seen`)
	if err != nil || len(res) != 1 {
		t.Fatalf("store: %v %+v", err, res)
	}
	want := res[0].ModSeq
	for {
		got, err := pair.Fetch(p.Replica, p.User())
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(got[4].Flags, `\Seen`) {
			if got[4].ModSeq != want {
				t.Fatalf("replica uid 5 modseq %d, primary %d", got[4].ModSeq, want)
			}
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("\\Seen not on the replica after 10s: %+v", got[4])
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("\\Seen visible on the replica %v after the STORE", time.Since(start))
	if err := p.Converged(); err != nil {
		t.Fatal(err)
	}
}
