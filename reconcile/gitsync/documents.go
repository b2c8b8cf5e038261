package gitsync

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"swarmvlan/reconcile"
	"swarmvlan/spec"
)

// Problem is one reason a commit is not applied: a file and what is wrong
// in it, by field path.
type Problem struct {
	File    string `json:"file"`
	Problem string `json:"problem"`
}

func (p Problem) String() string { return p.File + ": " + p.Problem }

// Doc is one valid document of a commit.
type Doc struct {
	File string
	Kind string
	Name string
	// Raw is the document's own bytes, as stored in KV.
	Raw []byte
}

// ParseFiles decodes and validates every document of files, as `reconciler
// apply` does (strict decode, defaults, validation, JSON Schema), and
// refuses a kind/name defined twice. Every problem is returned, each with
// its file; docs are only meaningful when there is none.
func ParseFiles(files []File) (docs []Doc, problems []Problem) {
	seen := map[string]string{}
	for _, f := range files {
		parsed, err := reconcile.ParseDocuments(f.Data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				problems = append(problems, Problem{File: f.Path, Problem: line})
			}
			continue
		}
		for _, d := range parsed {
			kind, name := d.Object.GetKind(), d.Object.GetName()
			id := kind + "/" + name
			if prev, dup := seen[id]; dup {
				problems = append(problems, Problem{File: f.Path, Problem: fmt.Sprintf("metadata.name: %s %q is also defined in %s", kind, name, prev)})
				continue
			}
			seen[id] = f.Path
			docs = append(docs, Doc{File: f.Path, Kind: kind, Name: name, Raw: d.Raw})
		}
	}
	return docs, problems
}

// sameDocument compares two stored documents by meaning, so a change of
// format or key order is not a change (as `reconciler apply` compares).
func sameDocument(a, b []byte) bool {
	ca, err1 := spec.Canonical(a)
	cb, err2 := spec.Canonical(b)
	if err1 != nil || err2 != nil {
		return string(a) == string(b)
	}
	return string(ca) == string(cb)
}

// digest identifies a document's meaning (its canonical form; the bytes
// when it has none), for the record of what a sync wrote.
func digest(v []byte) string {
	if c, err := spec.Canonical(v); err == nil {
		v = c
	}
	sum := sha256.Sum256(v)
	return hex.EncodeToString(sum[:12])
}
