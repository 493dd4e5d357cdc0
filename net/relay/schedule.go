package relay

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// scheduler runs functions at given times, in time order and, for equal
// times, in the order they were added. One goroutine (run) owns delivery.
type scheduler struct {
	max  int
	mu   sync.Mutex
	q    jobHeap
	seq  uint64
	kick chan struct{}
}

type job struct {
	at  time.Time
	seq uint64
	fn  func()
}

type jobHeap []job

func (h jobHeap) Len() int { return len(h) }
func (h jobHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h jobHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *jobHeap) Push(x any)   { *h = append(*h, x.(job)) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = job{}
	*h = old[:len(old)-1]
	return j
}

func newScheduler(max int) *scheduler {
	return &scheduler{max: max, kick: make(chan struct{}, 1)}
}

// add queues fn for time at; it reports false if the queue is full.
func (s *scheduler) add(at time.Time, fn func()) bool {
	s.mu.Lock()
	if len(s.q) >= s.max {
		s.mu.Unlock()
		return false
	}
	s.seq++
	heap.Push(&s.q, job{at: at, seq: s.seq, fn: fn})
	first := s.q[0].seq == s.seq
	s.mu.Unlock()
	if first {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// run delivers due jobs until ctx ends; jobs still queued then are dropped.
func (s *scheduler) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		var due []func()
		wait := time.Hour
		s.mu.Lock()
		now := time.Now()
		for len(s.q) > 0 {
			if d := s.q[0].at.Sub(now); d > 0 {
				wait = d
				break
			}
			due = append(due, heap.Pop(&s.q).(job).fn)
		}
		s.mu.Unlock()
		for _, fn := range due {
			fn()
		}
		if len(due) > 0 {
			continue // time passed while sending; look again
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		}
	}
}
