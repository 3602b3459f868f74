// Package freeport finds loopback TCP ports for servers that tests start as separate processes.
//
// A port the kernel hands out for "127.0.0.1:0" comes from its ephemeral range, which every outgoing
// connection on the machine draws from too: between a test closing its probe listener and the server
// binding the port, a client connection (to PostgreSQL, Pulsar, another test's server) can take it, and
// the server fails with "address already in use". These ports come from below that range, where only
// listeners that ask for a port by number live, and one process never hands out the same port twice.
package freeport

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// lowestPort is the bottom of the range ports are drawn from (below it sit well-known and registered
// services); the top is the kernel's ephemeral range's start.
const lowestPort = 10000

// defaultEphemeralStart is Linux's default when the range cannot be read.
const defaultEphemeralStart = 32768

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Addr returns "127.0.0.1:<port>" for a loopback port nobody listens on now (see Port).
func Addr() (string, error) {
	port, err := Port()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Port returns a loopback TCP port below the kernel's ephemeral range that nobody listens on now and that
// this process has not handed out before.
func Port() (int, error) {
	top := ephemeralStart()
	if top <= lowestPort {
		return 0, fmt.Errorf("freeport: the ephemeral port range starts at %d, leaving no ports below it above %d", top, lowestPort)
	}
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := lowestPort + rand.IntN(top-lowestPort)
		if handed[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return 0, fmt.Errorf("freeport: close probe of port %d: %w", port, err)
		}
		handed[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("freeport: no free port found in %d-%d after 1000 tries", lowestPort, top-1)
}

// ephemeralStart is the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralStart
	}
	fields := strings.Fields(string(b))
	if len(fields) != 2 {
		return defaultEphemeralStart
	}
	start, err := strconv.Atoi(fields[0])
	if err != nil {
		return defaultEphemeralStart
	}
	return start
}
