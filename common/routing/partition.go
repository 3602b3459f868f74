package routing

import "math/bits"

// Partition returns the partition, in [0, partitions), that carries routingKey. Every event with one
// routing key lands on one partition, which is what keeps per-key order.
//
// The hash is MurmurHash3 x86 32-bit with seed 0, masked to 31 bits: exactly Pulsar's
// HashingScheme Murmur3_32Hash in both the Java client and pulsar-client-go. A Pulsar producer configured
// with that scheme therefore picks the same partition for a key as this function, so the embedded and the
// pulsar drivers agree, and the mapping never changes across releases, processes or architectures.
// partitions <= 1 gives 0.
func Partition(routingKey string, partitions int) int {
	if partitions <= 1 {
		return 0
	}
	return int(KeyHash(routingKey) % uint32(partitions))
}

// KeyHash is the 31-bit key hash Partition uses (Pulsar's Murmur3_32Hash of the UTF-8 bytes).
func KeyHash(routingKey string) uint32 {
	return murmur3x86_32(routingKey, 0) & 0x7fffffff
}

// murmur3x86_32 is Austin Appleby's MurmurHash3_x86_32 over the bytes of s; it does not allocate.
func murmur3x86_32(s string, seed uint32) uint32 {
	const (
		c1 = 0xcc9e2d51
		c2 = 0x1b873593
	)
	h := seed
	n := len(s)
	i := 0
	for ; i+4 <= n; i += 4 {
		k := uint32(s[i]) | uint32(s[i+1])<<8 | uint32(s[i+2])<<16 | uint32(s[i+3])<<24
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
		h = bits.RotateLeft32(h, 13)
		h = h*5 + 0xe6546b64
	}
	var k uint32
	switch n - i {
	case 3:
		k ^= uint32(s[i+2]) << 16
		fallthrough
	case 2:
		k ^= uint32(s[i+1]) << 8
		fallthrough
	case 1:
		k ^= uint32(s[i])
		k *= c1
		k = bits.RotateLeft32(k, 15)
		k *= c2
		h ^= k
	}
	h ^= uint32(n)
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}
