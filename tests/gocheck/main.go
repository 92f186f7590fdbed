// Command gocheck verifies slaledger's checkpoints and Merkle proofs with Go's own
// golang.org/x/mod/sumdb/note and golang.org/x/mod/sumdb/tlog, an implementation
// independent of slaledger's Python (issue #26). It reads one JSON document on stdin:
//
//	{"vkey": "<origin>+<hash>+<base64 key>",
//	 "checkpoints": ["<signed note>", ...],
//	 "inclusion": [{"checkpoint": 0, "leaf_index": 3, "envelope_base64": "...", "inclusion_path": ["<hex>", ...]}],
//	 "consistency": [{"old": 0, "new": 1, "proof": ["<hex>", ...]}]}
//
// and exits 0 when every checkpoint's signature, inclusion proof and consistency proof
// verifies, else 1 naming the first failure (2 for unreadable input).
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusion struct {
	Checkpoint int      `json:"checkpoint"`
	LeafIndex  int64    `json:"leaf_index"`
	Envelope   string   `json:"envelope_base64"`
	Path       []string `json:"inclusion_path"`
}

type consistency struct {
	Old   int      `json:"old"`
	New   int      `json:"new"`
	Proof []string `json:"proof"`
}

type input struct {
	VKey        string        `json:"vkey"`
	Checkpoints []string      `json:"checkpoints"`
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
}

type tree struct {
	size int64
	root tlog.Hash
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gocheck: "+format+"\n", args...)
	os.Exit(code)
}

func hashes(hexes []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(hexes))
	for i, h := range hexes {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("hash %d is not 32 bytes of hex", i)
		}
		copy(out[i][:], b)
	}
	return out, nil
}

// open checks the note's signature by the log's key and reads its first three lines
// (origin, size, base64 root) as tlog-checkpoint defines them.
func open(text string, verifier note.Verifier) (tree, error) {
	n, err := note.Open([]byte(text), note.VerifierList(verifier))
	if err != nil {
		return tree{}, err
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 || lines[0] != verifier.Name() {
		return tree{}, fmt.Errorf("origin %q is not the key's name %q", lines[0], verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return tree{}, fmt.Errorf("tree size %q", lines[1])
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != len(tlog.Hash{}) {
		return tree{}, fmt.Errorf("root hash %q", lines[2])
	}
	var t tree
	t.size = size
	copy(t.root[:], root)
	return t, nil
}

func main() {
	var in input
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		fail(2, "input: %v", err)
	}
	verifier, err := note.NewVerifier(in.VKey)
	if err != nil {
		fail(2, "verifier key: %v", err)
	}
	trees := make([]tree, len(in.Checkpoints))
	for i, text := range in.Checkpoints {
		if trees[i], err = open(text, verifier); err != nil {
			fail(1, "checkpoint %d: %v", i, err)
		}
	}
	get := func(i int) tree {
		if i < 0 || i >= len(trees) {
			fail(2, "no checkpoint %d", i)
		}
		return trees[i]
	}
	for i, p := range in.Inclusion {
		t := get(p.Checkpoint)
		path, err := hashes(p.Path)
		if err != nil {
			fail(2, "inclusion %d: %v", i, err)
		}
		envelope, err := base64.StdEncoding.DecodeString(p.Envelope)
		if err != nil {
			fail(2, "inclusion %d: envelope is not base64", i)
		}
		if err := tlog.CheckRecord(path, t.size, t.root, p.LeafIndex, tlog.RecordHash(envelope)); err != nil {
			fail(1, "inclusion %d (leaf %d in a tree of %d): %v", i, p.LeafIndex, t.size, err)
		}
	}
	for i, c := range in.Consistency {
		old, cur := get(c.Old), get(c.New)
		proof, err := hashes(c.Proof)
		if err != nil {
			fail(2, "consistency %d: %v", i, err)
		}
		if old.size == 0 {
			continue // the empty tree is a prefix of every tree
		}
		if err := tlog.CheckTree(proof, cur.size, cur.root, old.size, old.root); err != nil {
			fail(1, "consistency %d (%d to %d leaves): %v", i, old.size, cur.size, err)
		}
	}
	var summary bytes.Buffer
	fmt.Fprintf(&summary, "OK: %d checkpoint(s), %d inclusion proof(s), %d consistency proof(s)\n",
		len(trees), len(in.Inclusion), len(in.Consistency))
	os.Stdout.Write(summary.Bytes())
}
