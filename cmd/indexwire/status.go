package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

func init() {
	register(command{"status", "print each peer's state and lag from a running daemon", runStatus})
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	addr := fs.String("metrics-addr", "127.0.0.1:9464", "the --metrics-addr of the daemon to ask")
	asJSON := fs.Bool("json", false, "print the raw status object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: indexwire status [--metrics-addr IP:PORT] [--json]\n\nAsks a running mount or serve daemon (started with --metrics-addr) for its peers' state.")
		fs.PrintDefaults()
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("%w: no arguments expected", errUsage)
	}
	if err := checkAddr("metrics-addr", *addr); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/status", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("ask daemon at %s: %w", *addr, err)
	}
	defer resp.Body.Close()
	var st statusReport
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("status from %s: %w", *addr, err)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(st)
	}
	fmt.Fprintf(stdout, "%s, up %s\n", st.Role, time.Since(st.Started).Round(time.Second))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tSTATE\tLAG\tBATCHES\tAPPLIED\tSTALE\tMISSING\tGUID_MISMATCH\tDIVERGED\tPENDING\tBYTES")
	for _, p := range st.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%.3fs\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Peer, p.State, p.LagSeconds, p.Batches,
			p.Applied, p.Stale, p.Missing, p.GUIDMismatch, p.Diverged, p.Pending, p.Bytes)
	}
	return tw.Flush()
}
