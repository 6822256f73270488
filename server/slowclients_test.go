package server_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/testenv"
	"github.com/mandate-dev/mandate/server"
	"github.com/mandate-dev/mandate/service"
)

// TestSlowClientsAreCutOff: 20 clients that send a body one byte at a time
// are each cut off at the read timeout instead of holding their connection
// for as long as they like, and ordinary checks keep answering meanwhile.
func TestSlowClientsAreCutOff(t *testing.T) {
	const clients = 20
	readTimeout := time.Second
	srv := testenv.Start(t, server.Config{Conn: server.ConnLimits{ReadTimeout: readTimeout}})
	addr := strings.TrimPrefix(srv.Base, "http://")

	held := make([]time.Duration, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			fmt.Fprintf(conn, "POST /v1/check HTTP/1.1\r\nHost: mandate\r\nAuthorization: Bearer %s\r\nContent-Length: 100000\r\n\r\n", testenv.Keys[service.RoleChecker])
			closed := make(chan struct{})
			go func() {
				// The server's answer, if any, then EOF when it hangs up.
				r := bufio.NewReader(conn)
				for {
					if _, err := r.ReadByte(); err != nil {
						break
					}
				}
				close(closed)
			}()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			deadline := time.After(10 * readTimeout)
			for {
				select {
				case <-closed:
					held[i] = time.Since(start)
					return
				case <-deadline:
					held[i] = time.Since(start)
					t.Errorf("slow client %d still connected after %v", i, held[i])
					return
				case <-tick.C:
					_, _ = conn.Write([]byte("{"))
				}
			}
		}(i)
	}
	// While they dribble, a normal caller is answered promptly.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if code, out := srv.Do("POST", "/v1/check", service.RoleChecker, map[string]string{"subject": "user:alice", "permission": "read", "resource": "repo:acme/api"}); code != 200 {
		t.Fatalf("check beside the slow clients: %d %v", code, out)
	}
	if d := time.Since(start); d > readTimeout {
		t.Errorf("check beside the slow clients took %v", d)
	}
	wg.Wait()
	var longest time.Duration
	for _, h := range held {
		longest = max(longest, h)
	}
	t.Logf("%d slow clients, read timeout %v: the longest held its connection %v", clients, readTimeout, longest)
	if longest > 3*readTimeout {
		t.Errorf("a slow client held its connection %v, want about the read timeout %v", longest, readTimeout)
	}
}
