package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// TLSConfig serves both ports over TLS, and with ClientCAFile, accepts
// client certificates as credentials.
type TLSConfig struct {
	// CertFile and KeyFile are the server's certificate chain and key (PEM).
	// Both or neither.
	CertFile, KeyFile string
	// ClientCAFile holds the CAs (PEM) that client certificates must chain
	// to: the SPIFFE trust bundle for X.509-SVIDs. A caller that presents a
	// verified certificate and no key is authenticated by the keys file's
	// spiffe_id or dns_name entries. Needs CertFile.
	ClientCAFile string
}

// Validate reports whether the TLS flags make sense together.
func (c *TLSConfig) Validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		return errors.New("--client-ca needs --tls-cert and --tls-key")
	}
	return nil
}

// Enabled reports whether the ports serve TLS.
func (c *TLSConfig) Enabled() bool { return c.CertFile != "" }

// reloadingTLS serves the certificate and client CAs from their files,
// reloading them when a file changes (checked at most once a second, on a
// handshake), so a rotated certificate takes effect without a restart. A
// file that fails to load keeps the previous contents in use.
type reloadingTLS struct {
	cfg TLSConfig
	log *slog.Logger

	mu      sync.Mutex
	checked time.Time // guarded by mu; when the files' times were last read
	stamps  [3]time.Time
	cert    *tls.Certificate // guarded by mu
	cas     *x509.CertPool   // guarded by mu; nil without ClientCAFile
}

func newReloadingTLS(cfg TLSConfig, log *slog.Logger) (*reloadingTLS, error) {
	r := &reloadingTLS{cfg: cfg, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

func modTime(path string) time.Time {
	if path == "" {
		return time.Time{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

// load reads the files. Errors name the flag.
func (r *reloadingTLS) load() error {
	stamps := [3]time.Time{modTime(r.cfg.CertFile), modTime(r.cfg.KeyFile), modTime(r.cfg.ClientCAFile)}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert %s, --tls-key %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	var cas *x509.CertPool
	if r.cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(r.cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("--client-ca: %w", err)
		}
		cas = x509.NewCertPool()
		if !cas.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--client-ca %s: no PEM certificate in it", r.cfg.ClientCAFile)
		}
	}
	r.cert, r.cas, r.stamps = &cert, cas, stamps
	return nil
}

// current returns the certificate and CAs, reloading them if a file changed.
func (r *reloadingTLS) current() (*tls.Certificate, *x509.CertPool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) >= time.Second {
		r.checked = time.Now()
		now := [3]time.Time{modTime(r.cfg.CertFile), modTime(r.cfg.KeyFile), modTime(r.cfg.ClientCAFile)}
		if now != r.stamps {
			if err := r.load(); err != nil {
				r.log.Error("reloading TLS files failed; serving the previous ones", "error", err)
				r.stamps = now // do not retry every second until the files change again
			} else {
				r.log.Info("reloaded TLS certificate and client CAs")
			}
		}
	}
	return r.cert, r.cas
}

// serverConfig is the tls.Config both ports use.
func (r *reloadingTLS) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, cas := r.current()
			c := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{"h2", "http/1.1"},
			}
			if cas != nil {
				// A key still works; a certificate, when sent, must verify.
				c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, cas
			}
			return c, nil
		},
	}
}
