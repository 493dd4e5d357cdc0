package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// statusReport is what /status returns and `indexwire status` prints.
type statusReport struct {
	Role    string       `json:"role"` // "primary" or "replica"
	Started time.Time    `json:"started"`
	Peers   []peerStatus `json:"peers"`
}

// peerStatus is one link's state.
type peerStatus struct {
	Peer         string  `json:"peer"`
	State        string  `json:"state"`
	LagSeconds   float64 `json:"lag_seconds"`
	Batches      uint64  `json:"batches"`
	Records      uint64  `json:"records"`
	Applied      uint64  `json:"applied"`
	Stale        uint64  `json:"stale"`
	Missing      uint64  `json:"missing"`
	GUIDMismatch uint64  `json:"guid_mismatch"`
	Diverged     uint64  `json:"diverged"`
	Pending      int     `json:"pending"`
	Bytes        uint64  `json:"bytes"`
}

// counterFunc registers a counter whose value is read from f at scrape time.
func counterFunc(reg *prometheus.Registry, name, help string, f func() uint64) {
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "indexwire", Name: name, Help: help},
		func() float64 { return float64(f()) }))
}

func gaugeFunc(reg *prometheus.Registry, name, help string, f func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "indexwire", Name: name, Help: help}, f))
}

// serveMetrics serves /metrics and /status on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry, status func() statusReport, log *zap.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	log.Info("metrics listening", zap.String("addr", ln.Addr().String()))
	return nil
}
