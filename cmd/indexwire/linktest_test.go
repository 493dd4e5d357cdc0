package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/indexwire/indexwire/net/link"
	"github.com/indexwire/indexwire/net/relay"
)

// lockedBuffer is a bytes.Buffer a command may write while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startCommand runs an indexwire command until the test ends and returns
// the first match of re in its stdout.
func startCommand(t *testing.T, re *regexp.Regexp, args ...string) (string, *lockedBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb lockedBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, &out, &errb) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%s exited %d: %s", strings.Join(args[:2], " "), code, errb.String())
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1], &out
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("%v exited %d early: %s", args, code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("%v printed no address: %q %q", args, out.String(), errb.String())
	return "", nil
}

var (
	serverLine = regexp.MustCompile(`linktest server on (\S+),`)
	relayLine  = regexp.MustCompile(`relay (\S+) ->`)
)

func TestLinktestCommands(t *testing.T) {
	srv, cli := t.TempDir(), t.TempDir()
	srvFP, err := link.GenerateKey(srv)
	if err != nil {
		t.Fatal(err)
	}
	cliFP, err := link.GenerateKey(cli)
	if err != nil {
		t.Fatal(err)
	}
	serverAddr, _ := startCommand(t, serverLine, "linktest", "serve", "--listen", "127.0.0.1:0", "--key", srv,
		"--peer-cert-sha256", cliFP, "--log-level", "error")
	relayAddr, _ := startCommand(t, relayLine, "linktest", "relay", "--to", serverAddr, "--delay", "15ms",
		"--loss", "2%", "--seed", "3", "--log-level", "error")

	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"linktest", "run", "--peer", relayAddr, "--key", cli, "--peer-cert-sha256", srvFP,
		"--duration", "1500ms", "--streams", "2", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("linktest run exited %d: %s", code, errb.String())
	}
	var rep struct {
		Peer    string `json:"peer"`
		Bytes   uint64 `json:"bytes"`
		IdleRTT struct {
			Samples int     `json:"samples"`
			Min     float64 `json:"min_ms"`
		} `json:"rtt_idle"`
		Streams []struct {
			Bytes uint64 `json:"bytes"`
		} `json:"streams"`
		Local struct {
			PacketsSent uint64 `json:"packets_sent"`
		} `json:"quic_local"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("run --json printed %q: %v", out.String(), err)
	}
	if rep.Peer != relayAddr || rep.Bytes == 0 || len(rep.Streams) != 2 || rep.Local.PacketsSent == 0 {
		t.Errorf("report %+v", rep)
	}
	if rep.IdleRTT.Samples != 10 || rep.IdleRTT.Min < 30 || rep.IdleRTT.Min > 45 {
		t.Errorf("idle rtt %+v through a relay adding 15 ms each way, want min 30..45 ms", rep.IdleRTT)
	}
	if !strings.Contains(errb.String(), "MiB sent") {
		t.Errorf("no progress on stderr: %q", errb.String())
	}

	// The table form names its sections.
	out.Reset()
	errb.Reset()
	code = run(t.Context(), []string{"linktest", "run", "--peer", serverAddr, "--key", cli, "--peer-cert-sha256", srvFP,
		"--duration", "300ms", "--size", "64K", "--quiet"}, &out, &errb)
	if code != 0 {
		t.Fatalf("linktest run exited %d: %s", code, errb.String())
	}
	for _, want := range []string{"handshake", "idle", "loaded", "total   256.0 KiB", "this end"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if errb.Len() != 0 {
		t.Errorf("--quiet wrote to stderr: %q", errb.String())
	}
}

func TestLinktestRelayRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--to", "192.0.2.1:7000"}, 1, "not loopback"},
		{[]string{"--listen", "0.0.0.0:0", "--to", "127.0.0.1:7000"}, 1, "not loopback"},
		{[]string{"--to", "127.0.0.1:7000", "--loss", "5"}, 2, "outside 0..100%"},
		{[]string{"--to", "127.0.0.1:7000", "--blackout", "10s"}, 2, "LENGTH@OFFSET"},
		{[]string{}, 2, "want --to"},
	} {
		var out, errb bytes.Buffer
		code := run(t.Context(), append([]string{"linktest", "relay"}, c.args...), &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("relay %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
}

func TestParseHelpers(t *testing.T) {
	for in, want := range map[string]float64{"5%": 0.05, "0.05": 0.05, "0": 0, "100%": 1, "2.5%": 0.025} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"5", "-1%", "x", "101%"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
	for in, want := range map[string]int64{"1048576": 1 << 20, "64K": 64 << 10, "64MiB": 64 << 20, "2G": 2 << 30, "0": 0} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "1T", "", "K"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if b, err := parseBlackout("10s@30s"); err != nil || b != (relay.Blackout{At: 30 * time.Second, For: 10 * time.Second}) {
		t.Errorf("parseBlackout(10s@30s) = %+v, %v", b, err)
	}
	for _, in := range []string{"10s", "0s@1s", "1s@-1s", "x@1s"} {
		if _, err := parseBlackout(in); err == nil {
			t.Errorf("parseBlackout(%q) accepted", in)
		}
	}
}
