// Package tcpproxy is a TCP proxy for tests: it sits in front of a real
// server (Postgres) and can take it away and give it back, as a stopped or
// restarted server would, without touching the server other tests share.
package tcpproxy

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards connections from Addr to a target.
type Proxy struct {
	target string
	// Addr is where clients connect.
	Addr  string
	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
}

// New starts a proxy to target on a free loopback port.
func New(target string) (*Proxy, error) {
	p := &Proxy{target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p.Addr = ln.Addr().String()
	p.serve(ln)
	return p, nil
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// Down refuses connections and cuts the open ones.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Up accepts connections again, on the same address.
func (p *Proxy) Up() error {
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return err
	}
	p.serve(ln)
	return nil
}
