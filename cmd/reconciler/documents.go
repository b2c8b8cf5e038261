package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"swarmvlan/reconcile"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// source is one document read from a file.
type source struct {
	File string
	Doc  spec.Document
}

// readSources reads every document under paths and validates it. All
// problems are returned together, each prefixed by its file.
func readSources(paths []string, stdin io.Reader) ([]source, []string, error) {
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("no documents given: use -f FILE|DIR|-")
	}
	var files []string
	for _, p := range paths {
		if p == "-" {
			files = append(files, "-")
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, nil, err
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		// Like kubectl -f: the files directly in the directory, not below.
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, nil, err
		}
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
		}
	}
	sort.Strings(files)
	var out []source
	var problems []string
	seen := map[string]string{}
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, nil, err
		}
		docs, err := reconcile.ParseDocuments(data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				problems = append(problems, f+": "+line)
			}
			continue
		}
		for _, d := range docs {
			id := d.Object.GetKind() + "/" + d.Object.GetName()
			if prev, dup := seen[id]; dup {
				problems = append(problems, fmt.Sprintf("%s: metadata.name: %s %q is also defined in %s", f, d.Object.GetKind(), d.Object.GetName(), prev))
				continue
			}
			seen[id] = f
			out = append(out, source{File: f, Doc: d})
		}
	}
	return out, problems, nil
}

// specDocs turns sources into the key/value pairs apply writes.
func specDocs(store *state.Store, srcs []source) []state.SpecDoc {
	docs := make([]state.SpecDoc, 0, len(srcs))
	for _, s := range srcs {
		docs = append(docs, state.SpecDoc{
			Key:   store.SpecKey(s.Doc.Object.GetKind(), s.Doc.Object.GetName()),
			Value: s.Doc.Raw,
		})
	}
	return docs
}

// sameDocument compares two stored documents by meaning, so a change of
// format or key order is not a change.
func sameDocument(a, b []byte) bool {
	ca, err1 := spec.Canonical(a)
	cb, err2 := spec.Canonical(b)
	if err1 != nil || err2 != nil {
		return string(a) == string(b)
	}
	return string(ca) == string(cb)
}
