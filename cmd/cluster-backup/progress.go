package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progress is a bar on a terminal (done/total, rate, elapsed and ETA)
// for work of a known size; on a pipe, in a log file or under --quiet
// there is none and lines pass straight through.
type progress struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	out io.Writer
}

// newProgress shows a bar for total steps of what on w when w is a
// terminal and quiet is false; a total of -1 is work of unknown size (a
// listing): a spinner with the time it has taken.
func newProgress(w io.Writer, total int, what string, quiet bool) *progress {
	p := &progress{out: w}
	if quiet || !isTerminal(w) || total == 0 {
		return p
	}
	p.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("objects"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetWidth(30),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
	)
	return p
}

// Add counts n steps done; past the total, the total grows.
func (p *progress) Add(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	if s := p.bar.State(); s.CurrentNum+int64(n) > s.Max {
		p.bar.ChangeMax64(s.CurrentNum + int64(n))
	}
	_ = p.bar.Add(n)
}

// Write prints lines above the bar.
func (p *progress) Write(b []byte) (int, error) {
	return p.Above(p.out).Write(b)
}

// Above is w with the bar cleared before each write: stdout on the same
// terminal.
func (p *progress) Above(w io.Writer) io.Writer {
	return writerFunc(func(b []byte) (int, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.bar != nil {
			_ = p.bar.Clear()
		}
		return w.Write(b)
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Printf is fmt.Fprintf above the bar.
func (p *progress) Printf(format string, args ...any) {
	fmt.Fprintf(p, format, args...)
}

// Done takes the bar off the terminal, once.
func (p *progress) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar == nil {
		return
	}
	_ = p.bar.Finish()
	_ = p.bar.Clear()
	p.bar = nil
}
