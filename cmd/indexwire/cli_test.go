package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/indexwire/indexwire/diff"
)

const testdata = "../../diff/testdata"

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

func TestInspectJSONMatchesCodec(t *testing.T) {
	dir := filepath.Join(testdata, "v17")
	code, out, errs := runCLI(t, "inspect", "--json", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var got struct {
		Header  map[string]any `json:"header"`
		Records []struct {
			UID      uint32   `json:"uid"`
			ModSeq   uint64   `json:"modseq"`
			GUID     string   `json:"guid"`
			Flags    []string `json:"flags"`
			Expunged bool     `json:"expunged"`
		} `json:"records"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "cyrus.index"))
	hb, _ := os.ReadFile(filepath.Join(dir, "cyrus.header"))
	ix, err := diff.DecodeIndex("v17", raw)
	if err != nil {
		t.Fatal(err)
	}
	mh, _ := diff.ParseMailboxHeader("h", hb)
	if got.Header["minor_version"] != 17.0 || got.Header["num_records"] != float64(ix.Header.NumRecords) ||
		got.Header["highestmodseq"] != float64(ix.Header.HighestModSeq) || got.Header["uidvalidity"] != float64(ix.Header.UIDValidity) {
		t.Fatalf("header %v", got.Header)
	}
	if len(got.Records) != len(ix.Records) {
		t.Fatalf("%d records, want %d", len(got.Records), len(ix.Records))
	}
	expunged := 0
	for i, r := range ix.Records {
		g := got.Records[i]
		want := diff.FlagString(r.SystemFlags, diff.FlagNames(r, mh.UserFlags))
		if g.UID != r.UID || g.ModSeq != r.ModSeq || g.GUID != r.GUID.String() || g.Expunged != r.Expunged() || !slices.Equal(g.Flags, want) {
			t.Fatalf("record %d: %+v, want uid %d flags %v", i, g, r.UID, want)
		}
		if g.Expunged {
			expunged++
		}
	}
	if expunged != 1 {
		t.Fatalf("%d expunged records, the fixture has one", expunged)
	}
}

func TestInspectRefusesBadFiles(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testdata, "v17", "cyrus.index"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		patch func([]byte) []byte
		want  string
	}{
		{"record crc", func(b []byte) []byte { b[160+2*112+33] ^= 0x10; return b }, "offset 492"},
		{"version 19", func(b []byte) []byte { b[11] = 19; return b }, "offset 8: minor_version"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-50] }, "truncated"},
		{"header crc", func(b []byte) []byte { b[44] ^= 1; return b }, "offset 156: header crc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_"))
			if err := os.WriteFile(p, tc.patch(bytes.Clone(raw)), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, errs := runCLI(t, "inspect", p)
			if code != 1 || !strings.Contains(errs, tc.want) || !strings.Contains(errs, p) {
				t.Fatalf("exit %d, stderr %q; want exit 1 naming %s and %q", code, errs, p, tc.want)
			}
		})
	}
	// A header that disagrees with its records: every CRC is right, the count is not.
	ix, _ := diff.DecodeIndex("x", raw)
	ix.Header.Flagged++
	bad, _ := ix.Encode()
	p := filepath.Join(dir, "inconsistent")
	os.WriteFile(p, bad, 0o644)
	code, out, errs := runCLI(t, "inspect", p)
	if code != 1 || !strings.Contains(errs, "offset 56: flagged") || !strings.Contains(out, "UID") {
		t.Fatalf("inconsistent header: exit %d, stderr %q", code, errs)
	}
}

func TestDiffRealStore(t *testing.T) {
	dir := filepath.Join(testdata, "v17-store")
	code, out, errs := runCLI(t, "diff", filepath.Join(dir, "before.index"), filepath.Join(dir, "after.index"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`1 record\(s\) changed`).MatchString(out) || !strings.Contains(out, `uid 3 `) ||
		!strings.Contains(out, `\Seen`) || !strings.Contains(out, "system_flags modseq last_updated") {
		t.Fatalf("diff output:\n%s", out)
	}
	code, out, _ = runCLI(t, "diff", "--json", filepath.Join(dir, "before.index"), filepath.Join(dir, "after.index"))
	var b struct {
		Records []struct {
			UID   uint32   `json:"uid"`
			Flags []string `json:"flags"`
		} `json:"records"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || len(b.Records) != 1 || b.Records[0].UID != 3 {
		t.Fatalf("diff --json: exit %d\n%s", code, out)
	}
}

func TestKeygen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "key")
	code, out, errs := runCLI(t, "keygen", "--dir", dir)
	if code != 0 || !regexp.MustCompile(`^[0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("exit %d out %q err %q", code, out, errs)
	}
	st, err := os.Stat(filepath.Join(dir, "key.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem: %v %v", st, err)
	}
	if code, _, errs := runCLI(t, "keygen", "--dir", dir); code != 1 || !strings.Contains(errs, "exist") {
		t.Fatalf("second keygen over the same dir: exit %d %q", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"inspect"}, {"diff", "a"}, {"keygen"}, {"mount"},
		{"mount", "--peer", "127.0.0.1:1", "/tmp"}, {"inspect", "--bogus", "x"}} {
		if code, _, _ := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}

// The annotated example configurations parse, every key lands in its flag,
// and a flag on the command line wins over the file.
func TestExampleConfigs(t *testing.T) {
	fs, sc := serveFlags(io.Discard)
	if _, err := parseDaemonFlags(fs, &sc.daemonFlags, []string{"--config", "../../examples/serve.yaml", "--listen", "127.0.0.1:9999"}); err != nil {
		t.Fatal(err)
	}
	if sc.listen != "127.0.0.1:9999" || sc.spool != "/var/spool/cyrus/mail" || sc.stateDir != "/var/lib/indexwire" ||
		len(sc.pins) != 1 || sc.metricsAddr != "127.0.0.1:9464" || sc.keyDir != "/etc/indexwire/key" {
		t.Fatalf("serve config %+v", sc)
	}
	fm, mc := mountFlags(io.Discard)
	pos, err := parseDaemonFlags(fm, &mc.daemonFlags, []string{"--config", "../../examples/mount.yaml", "/mnt/spool"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pos, []string{"/mnt/spool"}) || mc.peer != "127.0.0.1:7443" || len(mc.pins) != 1 || mc.backing != "" || mc.metricsAddr != "127.0.0.1:9464" {
		t.Fatalf("mount config %+v %v", mc, pos)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("spool: /x\nlisten_addr: 1\n"), 0o644)
	fs, sc = serveFlags(io.Discard)
	if _, err := parseDaemonFlags(fs, &sc.daemonFlags, []string{"--config", bad}); err == nil || !strings.Contains(err.Error(), `unknown key "listen_addr"`) {
		t.Fatalf("unknown key: %v", err)
	}
}
