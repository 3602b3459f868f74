package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, can be bound, and are never handed out twice.
func TestPortsAreBindableDistinctAndBelowTheEphemeralRange(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 50 {
		addr, err := Addr()
		if err != nil {
			t.Fatalf("Addr: %v", err)
		}
		if seen[addr] {
			t.Fatalf("%s handed out twice", addr)
		}
		seen[addr] = true
		_, portText, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("split %q: %v", addr, err)
		}
		port, _ := strconv.Atoi(portText)
		if port < lowestPort || port >= ephemeralStart() {
			t.Fatalf("port %d outside %d-%d: the kernel may hand it to an outgoing connection", port, lowestPort, ephemeralStart()-1)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("bind %s: %v", addr, err)
		}
		_ = l.Close()
	}
}
