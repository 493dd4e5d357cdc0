package linktest

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one run.
type Report struct {
	Peer      string
	Handshake time.Duration // from the first packet to a pinned, established connection
	Duration  time.Duration // load phase: first write to the last stream's confirmed count
	IdleRTT   RTTStats      // pings one at a time before the load
	LoadedRTT RTTStats      // pings every interval during the load
	Streams   []StreamResult
	Bytes     uint64    // bytes the server confirmed, all streams
	Goodput   float64   // bits per second, all streams: Bytes*8/Duration
	Local     PathStats // quic-go's view on this end (the sender of the load)
	Remote    PathStats // quic-go's view on the server
}

// RTTStats summarises round trips measured on a stream.
type RTTStats struct {
	Samples            int
	Min, Avg, P99, Max time.Duration
}

// StreamResult is one data stream's outcome.
type StreamResult struct {
	Stream   int
	Bytes    uint64        // bytes the server read
	Duration time.Duration // from the start of the load to the server's count
	Goodput  float64       // bits per second
	Err      string        // why the stream failed, if it did
}

// PathStats is quic-go's ConnectionStats on one end. PacketsLost counts
// packets declared lost, each of which quic-go retransmits (as new packets);
// a packet declared lost that arrives late is taken off again.
type PathStats struct {
	MinRTT          time.Duration
	SmoothedRTT     time.Duration
	MeanDeviation   time.Duration
	PacketsSent     uint64
	PacketsReceived uint64
	PacketsLost     uint64
	BytesSent       uint64
	BytesReceived   uint64
	BytesLost       uint64
}

// LossRate is PacketsLost over PacketsSent.
func (p PathStats) LossRate() float64 {
	if p.PacketsSent == 0 {
		return 0
	}
	return float64(p.PacketsLost) / float64(p.PacketsSent)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type jsonRTT struct {
	Samples int     `json:"samples"`
	Min     float64 `json:"min_ms"`
	Avg     float64 `json:"avg_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
}

func (r RTTStats) json() jsonRTT {
	return jsonRTT{Samples: r.Samples, Min: ms(r.Min), Avg: ms(r.Avg), P99: ms(r.P99), Max: ms(r.Max)}
}

type jsonStream struct {
	Stream  int     `json:"stream"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	Goodput float64 `json:"goodput_bps"`
	Error   string  `json:"error,omitempty"`
}

type jsonPath struct {
	MinRTT          float64 `json:"min_rtt_ms"`
	SmoothedRTT     float64 `json:"smoothed_rtt_ms"`
	MeanDeviation   float64 `json:"rtt_mean_deviation_ms"`
	PacketsSent     uint64  `json:"packets_sent"`
	PacketsReceived uint64  `json:"packets_received"`
	PacketsLost     uint64  `json:"packets_lost"`
	LossRate        float64 `json:"loss_rate"`
	BytesSent       uint64  `json:"bytes_sent"`
	BytesReceived   uint64  `json:"bytes_received"`
	BytesLost       uint64  `json:"bytes_lost"`
}

func (p PathStats) json() jsonPath {
	return jsonPath{MinRTT: ms(p.MinRTT), SmoothedRTT: ms(p.SmoothedRTT), MeanDeviation: ms(p.MeanDeviation),
		PacketsSent: p.PacketsSent, PacketsReceived: p.PacketsReceived, PacketsLost: p.PacketsLost, LossRate: p.LossRate(),
		BytesSent: p.BytesSent, BytesReceived: p.BytesReceived, BytesLost: p.BytesLost}
}

// MarshalJSON writes the report for scripts: durations in milliseconds
// (seconds for the load), rates in bits per second.
func (r *Report) MarshalJSON() ([]byte, error) {
	streams := make([]jsonStream, len(r.Streams))
	for i, s := range r.Streams {
		streams[i] = jsonStream{Stream: s.Stream, Bytes: s.Bytes, Seconds: s.Duration.Seconds(), Goodput: s.Goodput, Error: s.Err}
	}
	return json.Marshal(struct {
		Peer      string       `json:"peer"`
		Handshake float64      `json:"handshake_ms"`
		Seconds   float64      `json:"seconds"`
		IdleRTT   jsonRTT      `json:"rtt_idle"`
		LoadedRTT jsonRTT      `json:"rtt_loaded"`
		Streams   []jsonStream `json:"streams"`
		Bytes     uint64       `json:"bytes"`
		Goodput   float64      `json:"goodput_bps"`
		Local     jsonPath     `json:"quic_local"`
		Remote    jsonPath     `json:"quic_remote"`
	}{r.Peer, ms(r.Handshake), r.Duration.Seconds(), r.IdleRTT.json(), r.LoadedRTT.json(), streams, r.Bytes, r.Goodput,
		r.Local.json(), r.Remote.json()})
}

// WriteTable prints the report for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format+"\n", a...) }
	p("peer\t%s", r.Peer)
	p("handshake\t%s", fmtDur(r.Handshake))
	p("")
	p("round trip\tmin\tavg\tp99\tmax\tpings")
	for _, x := range []struct {
		name string
		s    RTTStats
	}{{"idle", r.IdleRTT}, {"loaded", r.LoadedRTT}} {
		p("%s\t%s\t%s\t%s\t%s\t%d", x.name, fmtDur(x.s.Min), fmtDur(x.s.Avg), fmtDur(x.s.P99), fmtDur(x.s.Max), x.s.Samples)
	}
	p("")
	p("stream\tbytes\ttime\tgoodput")
	for _, s := range r.Streams {
		if s.Err != "" {
			p("%d\t%s\t%s\tfailed: %s", s.Stream, fmtBytes(s.Bytes), fmtDur(s.Duration), s.Err)
			continue
		}
		p("%d\t%s\t%s\t%s", s.Stream, fmtBytes(s.Bytes), fmtDur(s.Duration), fmtRate(s.Goodput))
	}
	p("total\t%s\t%s\t%s", fmtBytes(r.Bytes), fmtDur(r.Duration), fmtRate(r.Goodput))
	p("")
	p("quic\tpackets sent\tpackets lost\tloss\tmin rtt\tsmoothed rtt")
	for _, x := range []struct {
		name string
		s    PathStats
	}{{"this end", r.Local}, {"peer", r.Remote}} {
		p("%s\t%d\t%d\t%.2f%%\t%s\t%s", x.name, x.s.PacketsSent, x.s.PacketsLost, 100*x.s.LossRate(), fmtDur(x.s.MinRTT), fmtDur(x.s.SmoothedRTT))
	}
	return tw.Flush()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.2f ms", ms(d))
	}
}

func fmtBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func fmtRate(bps float64) string {
	switch {
	case bps >= 1e9:
		return fmt.Sprintf("%.2f Gbit/s", bps/1e9)
	case bps >= 1e6:
		return fmt.Sprintf("%.1f Mbit/s", bps/1e6)
	default:
		return fmt.Sprintf("%.1f kbit/s", bps/1e3)
	}
}
