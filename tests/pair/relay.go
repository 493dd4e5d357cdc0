package pair

import (
	"context"
	"fmt"

	"github.com/indexwire/indexwire/net/relay"
)

// Impair puts an impairment relay (net/relay) between the primary's mount
// daemon and the replica daemon, running until ctx ends. Call it before
// StartMount, or restart the mount after it. The relay's far end follows
// the replica if it moves (see MoveReplica).
func (p *Pair) Impair(ctx context.Context, cfg relay.Config) (*relay.Relay, error) {
	cfg.Listen = "127.0.0.1:0"
	cfg.To = p.LinkAddr
	r, err := relay.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("impair link: %w", err)
	}
	go func() { _ = r.Run(ctx) }()
	p.mu.Lock()
	p.relay = r
	p.mu.Unlock()
	return r, nil
}

// peerAddr is where the mount daemon sends: the relay if there is one.
func (p *Pair) peerAddr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.relay != nil {
		return p.relay.Addr().String()
	}
	return p.LinkAddr
}

// MoveReplica restarts the replica daemon on a new UDP port, as if the
// standby's address changed, and points the relay at it. The primary keeps
// sending to the relay and must reconnect by itself.
func (p *Pair) MoveReplica() error {
	if err := p.StopServe(false); err != nil {
		return err
	}
	addr, err := freeUDP()
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.LinkAddr = addr
	r := p.relay
	p.mu.Unlock()
	if r == nil {
		return fmt.Errorf("move replica: no relay between the daemons")
	}
	if err := p.StartServe(); err != nil {
		return err
	}
	return r.SetTo(addr)
}

// Relay returns the impairment relay between the daemons, or nil.
func (p *Pair) Relay() *relay.Relay {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relay
}
