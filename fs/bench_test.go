package fs

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/indexwire/indexwire/diff"
)

// Overhead of the write hook, as ratios to a plain file on the backing file
// system. Run with: go test ./fs -run TestHookOverhead -v -iwbench
// (IW_BENCH=1 also enables it). Both cases write a copy of the v17 fixture
// index the way Cyrus does: lseek+write of one 112-byte record ("record"),
// and a whole commit of one record, the header and fsync ("commit").

func TestHookOverhead(t *testing.T) {
	if os.Getenv("IW_BENCH") == "" {
		t.Skip("set IW_BENCH=1 to measure the write hook overhead")
	}
	tm := mountT(t, "")
	copyFixture(t, "v17", filepath.Join(tm.backing, "m"))
	plainDir := filepath.Join(tm.backing, "plain")
	copyFixture(t, "v17", plainDir)
	mh := loadHeader(t, filepath.Join(plainDir, "cyrus.header"))
	_ = mh
	open := func(p string) (*os.File, *diff.Index, []byte) {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		b, _ := os.ReadFile(p)
		ix, err := diff.DecodeIndex(p, b)
		if err != nil {
			t.Fatal(err)
		}
		return f, ix, b
	}
	measure := func(f *os.File, ix *diff.Index, b []byte, commit bool, n int) []time.Duration {
		l := ix.Layout
		ds := make([]time.Duration, 0, n)
		for i := range n {
			k := i % len(ix.Records)
			off := l.RecordOffset(k + 1)
			t0 := time.Now()
			f.Seek(off, 0)
			f.Write(b[off : off+int64(l.RecordSize)])
			if commit {
				f.Seek(0, 0)
				f.Write(b[:l.HeaderSize])
				f.Sync()
			}
			ds = append(ds, time.Since(t0))
		}
		return ds
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		s := append([]time.Duration(nil), ds...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[int(p*float64(len(s)-1))]
	}
	mean := func(ds []time.Duration) time.Duration {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum / time.Duration(len(ds))
	}
	pf, pix, pb := open(filepath.Join(plainDir, "cyrus.index"))
	mf, mix, mb := open(filepath.Join(tm.mnt, "m", "cyrus.index"))
	for _, c := range []struct {
		name   string
		commit bool
		n      int
	}{{"record", false, 20000}, {"commit", true, 500}} {
		var plain, mount []time.Duration
		for range 4 { // interleave to share the machine's noise
			plain = append(plain, measure(pf, pix, pb, c.commit, c.n/4)...)
			mount = append(mount, measure(mf, mix, mb, c.commit, c.n/4)...)
		}
		t.Logf("%-6s plain p50 %v p99 %v mean %v | mount p50 %v p99 %v mean %v | ratio mean %.1fx p50 %.1fx",
			c.name, pct(plain, .5), pct(plain, .99), mean(plain), pct(mount, .5), pct(mount, .99), mean(mount),
			float64(mean(mount))/float64(mean(plain)), float64(pct(mount, .5))/float64(pct(plain, .5)))
	}
	if s := tm.Stats(); s.Failures != 0 || s.Batches < 500 {
		t.Errorf("stats %+v: want 500+ batches, no failures", s)
	}
}

// BenchmarkMailboxInfo is the cyrus.header lookup every commit does.
func BenchmarkMailboxInfo(b *testing.B) {
	dir := b.TempDir()
	copyFixture(b, "v17", dir)
	ov := &overlay{}
	for b.Loop() {
		if _, err := ov.mailboxInfo(dir); err != nil {
			b.Fatal(err)
		}
	}
}
