package main

import (
	"fmt"
	"strings"
	"time"
)

// replSection renders the replication results: one row per system and
// size, then the Cyrus/indexwire ratios.
func replSection(all []*replResult, changes int, mode string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Replication (issue 5)\n\n")
	fmt.Fprintf(&b, "Mode %s: %d single-UID `\\Seen` STOREs per system and mailbox size, alternating +FLAGS/-FLAGS "+
		"on varying UIDs, the two systems interleaved change by change on the same machine (after two warm-up changes each), "+
		"each round (one change per system) after a random pause of 0-1 s so changes land at random points of Cyrus's sync cycle. "+
		"Cyrus: `sync_client -r` under master (default `sync_repeat_interval` 1 s) to `sync_server`, replica seeded with "+
		"`sync_client -u`. indexwire: primary Cyrus on `indexwire mount` in place, `indexwire serve` on the replica, QUIC on 127.0.0.1 "+
		"(tests/pair). Latency counts from sending the STORE on the primary (so it includes the STORE itself, shown alone as STORE alone) until the replica shows it: "+
		"**file** = the UID's record in the replica's `cyrus.index` read with pread every 100 µs (CRC-checked, flag bit and modseq), "+
		"then **IMAP** = a persistent EXAMINE'd session on the replica polling `UID FETCH u (FLAGS MODSEQ)`. "+
		"Payload = TCP payload on the csync port (Cyrus, compressed csync) or UDP payload on the QUIC port (indexwire, "+
		"QUIC packets incl. acks), both directions, from one `tcpdump -i lo` of the whole run, divided by the number of changes.\n\n",
		mode, changes)
	t := table{head: []string{"N", "system", "file p50 / p90 / p99 ms", "IMAP p50 / p90 / p99 ms", "STORE alone p50 / p99 ms", "file after STORE OK p50 / p99 ms", "payload B/change",
		"packets/change", "NOOP needed", "converged"}}
	for _, r := range all {
		s := r.sys
		conv := "yes"
		if r.converge != nil {
			conv = "NO: " + r.converge.Error()
		}
		t.add(fmt.Sprint(r.n), s.name, pct3(s.fileLat), pct3(s.imapLat), ms(quantile(s.storeLat, .5))+" / "+ms(quantile(s.storeLat, .99)),
			ms(quantile(s.afterOK, .5))+" / "+ms(quantile(s.afterOK, .99)),
			fmt.Sprintf("%.0f", float64(r.payload.Payload)/float64(r.changes)),
			fmt.Sprintf("%.1f", float64(r.payload.Packets)/float64(r.changes)),
			fmt.Sprintf("%d/%d", s.noops, len(s.imapLat)), conv)
	}
	b.WriteString(t.String())
	fmt.Fprintf(&b, "\nRatios Cyrus / indexwire (higher = indexwire better):\n\n")
	t2 := table{head: []string{"N", "file p50", "file p90", "file p99", "IMAP p50", "IMAP p99", "payload bytes"}}
	byN := map[int]map[string]*replResult{}
	var sizes []int
	for _, r := range all {
		if byN[r.n] == nil {
			byN[r.n] = map[string]*replResult{}
			sizes = append(sizes, r.n)
		}
		byN[r.n][r.sys.name] = r
	}
	for _, n := range sizes {
		c, i := byN[n]["Cyrus rolling sync"], byN[n]["indexwire"]
		if c == nil || i == nil {
			continue
		}
		rq := func(a, b []time.Duration, q float64) string {
			return fmt.Sprintf("%.0fx", float64(quantile(a, q))/float64(quantile(b, q)))
		}
		t2.add(fmt.Sprint(n), rq(c.sys.fileLat, i.sys.fileLat, .5), rq(c.sys.fileLat, i.sys.fileLat, .9),
			rq(c.sys.fileLat, i.sys.fileLat, .99), rq(c.sys.imapLat, i.sys.imapLat, .5), rq(c.sys.imapLat, i.sys.imapLat, .99),
			fmt.Sprintf("%.1fx", float64(c.payload.Payload)/float64(i.payload.Payload)))
	}
	b.WriteString(t2.String())
	fmt.Fprintf(&b, "\nGoals (issue 5): indexwire p50 <= 2 ms, p99 <= 10 ms, flat in N, >= 100x below Cyrus, <= 100 B per change. "+
		"\"NOOP needed\" counts changes the persistent replica session did not show within %v of the file showing them, "+
		"after which it sent a NOOP.\n", noopAfter)
	return b.String()
}

func pct3(d []time.Duration) string {
	if len(d) == 0 {
		return "n/a"
	}
	return ms(quantile(d, .5)) + " / " + ms(quantile(d, .9)) + " / " + ms(quantile(d, .99))
}
