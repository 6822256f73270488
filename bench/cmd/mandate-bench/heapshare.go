package main

import (
	"bytes"
	"errors"
	"runtime/pprof"
	"strings"

	"github.com/google/pprof/profile"
)

// memdbFrames are the packages whose allocations are SpiceDB's memory
// datastore: its radix trees and tables. The datastore appends a snapshot of
// its tree on every write and never drops one (SpiceDB 1.56.2,
// internal/datastore/memdb/memdb.go), so what these allocated stays live.
var memdbFrames = []string{
	"github.com/hashicorp/go-immutable-radix.",
	"github.com/hashicorp/go-memdb.",
	"github.com/authzed/spicedb/internal/datastore/memdb.",
}

// heapShares reads the process's heap profile and returns the bytes in use
// (as of the last garbage collection, scaled from the runtime's sampling)
// allocated inside SpiceDB's memory datastore, and all the rest.
func heapShares() (memdb, rest float64, err error) {
	var buf bytes.Buffer
	if err := pprof.Lookup("heap").WriteTo(&buf, 0); err != nil {
		return 0, 0, err
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		return 0, 0, err
	}
	inuse := -1
	for i, st := range p.SampleType {
		if st.Type == "inuse_space" {
			inuse = i
		}
	}
	if inuse < 0 {
		return 0, 0, errNoInuse
	}
	for _, s := range p.Sample {
		v := float64(s.Value[inuse])
		if inMemdb(s) {
			memdb += v
		} else {
			rest += v
		}
	}
	return memdb, rest, nil
}

func inMemdb(s *profile.Sample) bool {
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function == nil {
				continue
			}
			for _, f := range memdbFrames {
				if strings.HasPrefix(l.Function.Name, f) {
					return true
				}
			}
		}
	}
	return false
}

var errNoInuse = errors.New("the heap profile has no inuse_space")
