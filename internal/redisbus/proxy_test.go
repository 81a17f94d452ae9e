package redisbus

import (
	"io"
	"net"
	"sync"
	"testing"
)

// proxy forwards TCP connections to a Redis. blackhole() silences every
// connection open at that moment for good, without closing it (a
// subscription on a master that went away quietly); connections made
// after it work.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns []*pconn // guarded by mu
	wg    sync.WaitGroup
}

type pconn struct {
	mu     sync.Mutex
	silent bool // guarded by mu
}

func startProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	var closers []io.Closer
	var cmu sync.Mutex
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			cmu.Lock()
			closers = append(closers, c, r)
			cmu.Unlock()
			pc := &pconn{}
			p.mu.Lock()
			p.conns = append(p.conns, pc)
			p.mu.Unlock()
			p.wg.Go(func() { pc.pipe(c, r) })
			p.wg.Go(func() { pc.pipe(r, c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		cmu.Lock()
		for _, c := range closers {
			_ = c.Close()
		}
		cmu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.mu.Lock()
		c.silent = true
		c.mu.Unlock()
	}
}

// pipe copies src to dst until an error, dropping what it reads once silent.
func (pc *pconn) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			_ = dst.Close()
			return
		}
		pc.mu.Lock()
		silent := pc.silent
		pc.mu.Unlock()
		if silent {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
