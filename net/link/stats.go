package link

import (
	"sync/atomic"
	"time"
)

// SenderStats is a snapshot of a Sender's counters.
type SenderStats struct {
	Connects            uint64        // sessions established (TLS, pins and Hello passed)
	Reconnects          uint64        // sessions established after the first
	DialErrors          uint64        // failed connection attempts
	BatchesSent         uint64        // batch frames written
	BatchesAcked        uint64        // batches the replica acknowledged without error
	BatchesRefused      uint64        // batches the replica answered with an error
	BatchesFailed       uint64        // batches lost to a stream or connection error
	RecordsSent         uint64        // record deltas in sent batches
	RecordsApplied      uint64        // as reported in Acks
	RecordsStale        uint64        // as reported in Acks
	RecordsMissing      uint64        // as reported in Acks
	RecordsGUIDMismatch uint64        // as reported in Acks
	Diverged            uint64        // Acks reporting a synccrc mismatch
	PayloadBytes        uint64        // encoded batch bytes written
	FrameBytes          uint64        // batch frame bytes written (header and payload)
	Pongs               uint64        // heartbeat answers received
	RTT                 time.Duration // last heartbeat round trip
}

type senderCounters struct {
	connects, reconnects, dialErrors                                      atomic.Uint64
	batchesSent, batchesAcked, batchesRefused, batchesFailed              atomic.Uint64
	recordsSent, recordsApplied, recordsStale, recordsMissing, recordsGUI atomic.Uint64
	diverged, payloadBytes, frameBytes, pongs                             atomic.Uint64
	rtt                                                                   atomic.Int64
}

func (c *senderCounters) snapshot() SenderStats {
	return SenderStats{
		Connects: c.connects.Load(), Reconnects: c.reconnects.Load(), DialErrors: c.dialErrors.Load(),
		BatchesSent: c.batchesSent.Load(), BatchesAcked: c.batchesAcked.Load(),
		BatchesRefused: c.batchesRefused.Load(), BatchesFailed: c.batchesFailed.Load(),
		RecordsSent: c.recordsSent.Load(), RecordsApplied: c.recordsApplied.Load(), RecordsStale: c.recordsStale.Load(),
		RecordsMissing: c.recordsMissing.Load(), RecordsGUIDMismatch: c.recordsGUI.Load(), Diverged: c.diverged.Load(),
		PayloadBytes: c.payloadBytes.Load(), FrameBytes: c.frameBytes.Load(), Pongs: c.pongs.Load(),
		RTT: time.Duration(c.rtt.Load()),
	}
}

// ServerStats is a snapshot of a Server's counters.
type ServerStats struct {
	Connections     uint64 // connections accepted (pins passed)
	RefusedPeers    uint64 // handshakes refused for an unpinned certificate
	BatchesReceived uint64 // batch frames read
	BatchesApplied  uint64 // batches Apply returned without error
	BatchesRejected uint64 // batches whose payload did not decode (Apply not called)
	BatchesFailed   uint64 // batches Apply returned an error for
	StreamResets    uint64 // streams reset for a framing error
	PayloadBytes    uint64 // batch payload bytes read
	FrameBytes      uint64 // batch frame bytes read (header and payload)
}

type serverCounters struct {
	connections, refusedPeers, batchesReceived, batchesApplied atomic.Uint64
	batchesRejected, batchesFailed, streamResets               atomic.Uint64
	payloadBytes, frameBytes                                   atomic.Uint64
}

func (c *serverCounters) snapshot() ServerStats {
	return ServerStats{
		Connections: c.connections.Load(), RefusedPeers: c.refusedPeers.Load(),
		BatchesReceived: c.batchesReceived.Load(), BatchesApplied: c.batchesApplied.Load(),
		BatchesRejected: c.batchesRejected.Load(), BatchesFailed: c.batchesFailed.Load(),
		StreamResets: c.streamResets.Load(), PayloadBytes: c.payloadBytes.Load(), FrameBytes: c.frameBytes.Load(),
	}
}
