package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

func TestStatusTable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := prometheus.NewRegistry()
	counterFunc(reg, "records_applied_total", "test", func() uint64 { return 212 })
	report := statusReport{Role: "primary", Started: time.Now().Add(-time.Minute), Peers: []peerStatus{{
		Peer: "127.0.0.1:7443", State: "connected", LagSeconds: 0.004, Batches: 212, Applied: 212, GUIDMismatch: 1, Bytes: 19716}}}
	srv := httptest.NewServer(nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // free the port for serveMetrics
	if err := serveMetrics(ctx, addr, reg, func() statusReport { return report }, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for try := 0; ; try++ {
		out.Reset()
		if err := runStatus(ctx, []string{"--metrics-addr", addr}, &out, &out); err == nil {
			break
		} else if try == 50 {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "primary, up 1m") || !strings.Contains(lines[1], "GUID_MISMATCH") {
		t.Fatalf("status output:\n%s", out.String())
	}
	if f := strings.Fields(lines[2]); len(f) != 11 || f[0] != "127.0.0.1:7443" || f[2] != "0.004s" || f[7] != "1" || f[10] != "19716" {
		t.Fatalf("peer row %q", lines[2])
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || !strings.Contains(string(body), "indexwire_records_applied_total 212") {
		t.Fatalf("metrics: %v\n%s", err, body)
	}
}
