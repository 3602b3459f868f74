package filter

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxPatternLength is the longest routing_key_patterns entry, in characters: the longest routing key.
const MaxPatternLength = 256

// keyPattern is a compiled routing-key glob. The key and the pattern are split at '.' into segments:
//   - "**" as a whole segment matches any number of key segments, zero included
//     ("portfolio_001.**" matches "portfolio_001" and "portfolio_001.state.update");
//   - "*" matches any run of characters inside one segment, so "*" alone is exactly one segment and
//     "portfolio_*" is one segment starting with "portfolio_";
//   - every other character matches itself.
//
// Matching is greedy with a single backtrack point per level (the classic wildcard algorithm), so it takes
// at most O(len(pattern) * len(key)) steps whatever the input: no exponential backtracking.
type keyPattern struct {
	segments []segmentPattern
}

// segmentPattern matches one dot-free key segment. anyRun marks "**".
type segmentPattern struct {
	anyRun bool
	// pieces are the literal parts between '*'s; a segment without '*' has one piece and star false.
	pieces []string
	star   bool
}

// compilePattern validates and compiles one glob. The error text is a FieldError description.
func compilePattern(p string) (keyPattern, error) {
	if p == "" {
		return keyPattern{}, fmt.Errorf("must not be empty; use \"**\" to match every routing key")
	}
	if n := utf8.RuneCountInString(p); n > MaxPatternLength {
		return keyPattern{}, fmt.Errorf("at most %d characters (got %d); shorten the pattern", MaxPatternLength, n)
	}
	if !utf8.ValidString(p) {
		return keyPattern{}, fmt.Errorf("must be valid UTF-8")
	}
	for i, r := range p {
		if r == ' ' || !unicode.IsPrint(r) {
			return keyPattern{}, fmt.Errorf("must be printable characters without spaces (got %q at byte %d)", r, i)
		}
	}
	parts := strings.Split(p, ".")
	kp := keyPattern{segments: make([]segmentPattern, 0, len(parts))}
	for i, part := range parts {
		switch {
		case part == "":
			return keyPattern{}, fmt.Errorf("segment %d is empty in %q; separate segments with a single '.' and do not start or end with '.'", i+1, p)
		case part == "**":
			// Consecutive "**" mean the same as one; keeping one keeps matching linear.
			if n := len(kp.segments); n > 0 && kp.segments[n-1].anyRun {
				continue
			}
			kp.segments = append(kp.segments, segmentPattern{anyRun: true})
		case strings.Contains(part, "**"):
			return keyPattern{}, fmt.Errorf("\"**\" must be a whole segment (got %q in segment %d); use \"*\" inside a segment", part, i+1)
		default:
			pieces := strings.Split(part, "*")
			kp.segments = append(kp.segments, segmentPattern{pieces: pieces, star: len(pieces) > 1})
		}
	}
	return kp, nil
}

// match reports whether key matches the pattern. It does not allocate.
func (kp *keyPattern) match(key string) bool {
	segs := kp.segments
	pi := 0      // next pattern segment
	ki := 0      // byte offset of the next key segment; len(key)+1 once every segment is consumed
	starPi := -1 // pattern index after the last "**" seen
	starKi := 0  // key offset the last "**" is currently assumed to end at
	end := len(key) + 1
	for ki < end {
		if pi < len(segs) && segs[pi].anyRun {
			starPi, starKi = pi+1, ki
			pi++
			continue
		}
		seg, next := segmentAt(key, ki)
		if pi < len(segs) && segs[pi].matchSegment(seg) {
			pi++
			ki = next
			continue
		}
		if starPi < 0 {
			return false
		}
		// Let the last "**" swallow one more key segment and retry from there.
		_, starKi = segmentAt(key, starKi)
		pi, ki = starPi, starKi
	}
	for pi < len(segs) && segs[pi].anyRun {
		pi++
	}
	return pi == len(segs)
}

// segmentAt returns the key segment starting at byte offset i and the offset of the following segment
// (len(key)+1 after the last one).
func segmentAt(key string, i int) (string, int) {
	if j := strings.IndexByte(key[i:], '.'); j >= 0 {
		return key[i : i+j], i + j + 1
	}
	return key[i:], len(key) + 1
}

// matchSegment matches one dot-free segment against literal pieces separated by '*'.
func (sp *segmentPattern) matchSegment(s string) bool {
	if !sp.star {
		return s == sp.pieces[0]
	}
	first, last := sp.pieces[0], sp.pieces[len(sp.pieces)-1]
	if len(s) < len(first)+len(last) || !strings.HasPrefix(s, first) || !strings.HasSuffix(s, last) {
		return false
	}
	// The leftmost occurrence of each middle piece leaves the most room for the rest, so greedy is exact.
	rest := s[len(first) : len(s)-len(last)]
	for _, piece := range sp.pieces[1 : len(sp.pieces)-1] {
		j := strings.Index(rest, piece)
		if j < 0 {
			return false
		}
		rest = rest[j+len(piece):]
	}
	return true
}
