package engine

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDatastoreOutageIsUnavailable: SpiceDB reports its Postgres going away
// as Internal or Unknown; mandate answers 503 (retry), not 500. These are
// the messages a stopped Postgres produced under
// server/faults_cluster_test.go's TestPostgresStoppedAndRestarted.
func TestDatastoreOutageIsUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want Kind
	}{
		{status.Error(codes.Internal, "unexpected consistency middleware error: unable to find revision: failed to connect to `user=postgres database=m`: 127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused"), KindUnavailable},
		{status.Error(codes.Unknown, "failed to connect to `user=postgres database=m`: 127.0.0.1:5432 (127.0.0.1): dial error: dial tcp 127.0.0.1:5432: connect: connection refused"), KindUnavailable},
		{status.Error(codes.Unknown, "FATAL: terminating connection due to administrator command (SQLSTATE 57P01)"), KindUnavailable},
		{status.Error(codes.Internal, "FATAL: the database system is starting up (SQLSTATE 57P03)"), KindUnavailable},
		{status.Error(codes.Internal, "caveat evaluation failed"), KindInternal},
		{errors.New("something else"), KindInternal},
	} {
		var e *Error
		if !errors.As(backendErr("Op", c.err), &e) || e.Kind != c.want {
			t.Errorf("%v: kind %v, want %v", c.err, e, c.want)
		}
	}
}
