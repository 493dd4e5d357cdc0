package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// benchResult holds the metrics of one benchmark over its -count runs.
type benchResult map[string][]float64

// runGoBench runs Go benchmarks matching pattern in a child `go test` and
// returns their metrics by benchmark name (without the -GOMAXPROCS suffix)
// and unit.
func runGoBench(ctx context.Context, root, pattern, benchtime string, count int, pkgs ...string) (map[string]benchResult, string, error) {
	args := append([]string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", strconv.Itoa(count)}, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	res, err := parseGoBench(out)
	return res, string(out), err
}

// parseGoBench reads `go test -bench` output lines of the form
// "BenchmarkX-2  N  v1 unit1  v2 unit2 ...".
func parseGoBench(out []byte) (map[string]benchResult, error) {
	res := map[string]benchResult{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		r := res[name]
		if r == nil {
			r = benchResult{}
			res[name] = r
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: bad value %q", sc.Text(), f[i])
			}
			r[f[i+1]] = append(r[f[i+1]], v)
		}
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no benchmark lines in go test output")
	}
	return res, nil
}

// codecSection measures issue 2's two numbers.
func codecSection(ctx context.Context, root string, quick bool) (string, error) {
	count := 5
	if quick {
		count = 3
	}
	res, _, err := runGoBench(ctx, root, "^(BenchmarkScanIndex100k|BenchmarkEncodeSeen)$", "1s", count, "./diff/")
	if err != nil {
		return "", err
	}
	scan, enc := res["BenchmarkScanIndex100k"], res["BenchmarkEncodeSeen"]
	if scan == nil || enc == nil {
		return "", fmt.Errorf("codec benchmarks missing from go test output")
	}
	get := func(r benchResult, unit string) float64 { return medianFloat(r[unit]) }
	var b strings.Builder
	fmt.Fprintf(&b, "## Codec (issue 2)\n\n")
	fmt.Fprintf(&b, "`go test -bench` in ./diff/, median of %d runs; decode and copy are timed in the same loop.\n\n", count)
	t := table{head: []string{"measure", "value", "goal"}}
	t.add("DecodeIndex of a 100k-record v17 index (11.2 MB), ms", fmt.Sprintf("%.1f", get(scan, "decode-ns/op")/1e6), "")
	t.add("plain copy of the same bytes, ms", fmt.Sprintf("%.2f", get(scan, "copy-ns/op")/1e6), "")
	t.add("**scan / copy time ratio**", fmt.Sprintf("**%.1fx**", get(scan, "x-copy")), "")
	t.add("decode throughput, MB/s", fmt.Sprintf("%.0f", get(scan, "decode-MB/s")), "")
	t.add("**encoded single \\Seen change** (24-char unique id), bytes", fmt.Sprintf("**%.0f**", get(enc, "bytes/change")), "<= 48")
	t.add("marginal bytes per further record (2-record minus 1-record batch)", fmt.Sprintf("%.0f", get(enc, "bytes/extra-record")), "")
	t.add("EncodeBatch time for that change, ns", fmt.Sprintf("%.0f", get(enc, "ns/op")), "")
	b.WriteString(t.String())
	one := get(enc, "bytes/change")
	if one > 48 {
		fmt.Fprintf(&b, "\nThe single-change batch misses the 48-byte goal by %.0f bytes. Its fixed parts: "+
			"24-byte unique id + 1 length, 20-byte GUID, 8-byte xxhash64, 4-byte synccrcs.basic, version and flags bytes; "+
			"the rest are varints. Ideas (not done here): name the mailbox by a per-session varint after its first batch "+
			"(-24 B), drop the xxhash64 on QUIC where TLS already authenticates every byte (-8 B).\n", one-48)
	}
	return b.String(), nil
}

// componentSection runs the other packages' Go benchmarks once each
// (replica apply, link send) and lists their metrics.
func componentSection(ctx context.Context, root string) (string, error) {
	res, _, err := runGoBench(ctx, root, ".", "3x", 1, "./diff/replica/", "./net/...")
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(res))
	for n := range res {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	fmt.Fprintf(&b, "## Component benchmarks\n\n`go test -bench . -benchtime 3x ./diff/replica/ ./net/...` (one run each, indicative).\n\n")
	t := table{head: []string{"benchmark", "metrics"}}
	for _, n := range names {
		units := make([]string, 0, len(res[n]))
		for u := range res[n] {
			units = append(units, u)
		}
		slices.Sort(units)
		var cells []string
		for _, u := range units {
			cells = append(cells, fmt.Sprintf("%.4g %s", medianFloat(res[n][u]), u))
		}
		t.add(n, strings.Join(cells, ", "))
	}
	b.WriteString(t.String())
	return b.String(), nil
}
