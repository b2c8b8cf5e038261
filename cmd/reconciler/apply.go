package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// sourceFlags registers -f on fs; loadSources reads what it names (and any
// positional paths) once fs is parsed, printing every problem to stderr and
// returning exit 1 when there is one.
func sourceFlags(fs *flag.FlagSet) *stringList {
	files := &stringList{}
	fs.Var(files, "f", "file, directory or - (repeatable)")
	return files
}

func loadSources(c *cli, files *stringList, pos []string, verdict string) ([]source, error) {
	srcs, problems, err := readSources(append(*files, pos...), c.stdin)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(c.stderr, p)
		}
		fmt.Fprintf(c.stderr, "%d problem(s); %s\n", len(problems), verdict)
		return nil, exitError{1}
	}
	return srcs, nil
}

func cmdValidate(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	files := sourceFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	srcs, err := loadSources(c, files, pos, "nothing is valid until all are fixed")
	if err != nil {
		return err
	}
	for _, s := range srcs {
		fmt.Fprintf(c.stdout, "%s: %s %s valid\n", s.File, s.Doc.Object.GetKind(), s.Doc.Object.GetName())
	}
	return nil
}

func cmdApply(ctx context.Context, c *cli, args []string) error {
	return applyOrDiff(ctx, c, args, false)
}

func cmdDiff(ctx context.Context, c *cli, args []string) error {
	return applyOrDiff(ctx, c, args, true)
}

func applyOrDiff(ctx context.Context, c *cli, args []string, diffOnly bool) error {
	fs := c.flags()
	files := sourceFlags(fs)
	prune := fs.Bool("prune", false, "delete documents under <prefix>spec/ that the sources do not hold")
	allowEmpty := fs.Bool("allow-empty", false, "with --prune, allow a sync that leaves no document at all")
	dryRun := fs.Bool("dry-run", false, "say what would change, write nothing")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	srcs, err := loadSources(c, files, pos, "nothing was written")
	if err != nil {
		return err
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	docs := specDocs(store, srcs)
	opts := state.ApplyOptions{Prune: *prune || diffOnly, DryRun: *dryRun || diffOnly, AllowEmpty: *allowEmpty || diffOnly, Equal: sameDocument}
	res, err := store.Apply(ctx, docs, opts)
	if err != nil {
		return err
	}
	if diffOnly {
		return printDiff(ctx, c.stdout, store, docs, res, *prune)
	}
	verb := ""
	if opts.DryRun {
		verb = " (dry run)"
	}
	printKeys(c.stdout, store, "created", res.Created)
	printKeys(c.stdout, store, "changed", res.Changed)
	printKeys(c.stdout, store, "pruned", res.Pruned)
	fmt.Fprintf(c.stdout, "%d created, %d changed, %d unchanged, %d pruned%s\n",
		len(res.Created), len(res.Changed), len(res.Unchanged), len(res.Pruned), verb)
	return nil
}

func printKeys(w io.Writer, store *state.Store, verb string, keys []string) {
	for _, k := range keys {
		fmt.Fprintf(w, "%s %s\n", verb, strings.TrimPrefix(k, store.SpecPrefix()))
	}
}

// printDiff shows, per document, what apply would do; a document changed by
// hand in KV shows as a difference from its source. Keys only in KV are shown
// as drift, and as pruned when --prune is given.
func printDiff(ctx context.Context, w io.Writer, store *state.Store, docs []state.SpecDoc, res state.ApplyResult, prune bool) error {
	src := map[string][]byte{}
	for _, d := range docs {
		src[d.Key] = d.Value
	}
	stored, err := store.SpecDocs(ctx)
	if err != nil {
		return err
	}
	have := map[string][]byte{}
	for _, d := range stored {
		have[d.Key] = d.Value
	}
	short := func(k string) string { return strings.TrimPrefix(k, store.SpecPrefix()) }
	for _, k := range sorted(res.Created) {
		fmt.Fprintf(w, "+ %s (new)\n", short(k))
		writeLines(w, "+ ", canonicalIndent(src[k]))
	}
	for _, k := range sorted(res.Changed) {
		fmt.Fprintf(w, "~ %s\n", short(k))
		for _, l := range lineDiff(canonicalIndent(have[k]), canonicalIndent(src[k])) {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, k := range sorted(res.Pruned) {
		if prune {
			fmt.Fprintf(w, "- %s (only in KV; apply --prune deletes it)\n", short(k))
		} else {
			fmt.Fprintf(w, "? %s (only in KV; not in the sources)\n", short(k))
		}
	}
	fmt.Fprintf(w, "%d to create, %d to change, %d unchanged, %d only in KV\n",
		len(res.Created), len(res.Changed), len(res.Unchanged), len(res.Pruned))
	return nil
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func canonicalIndent(doc []byte) []string {
	c, err := spec.Canonical(doc)
	if err != nil {
		return strings.Split(strings.TrimRight(string(doc), "\n"), "\n")
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, c, "", "  "); err != nil {
		return strings.Split(string(c), "\n")
	}
	return strings.Split(buf.String(), "\n")
}

func writeLines(w io.Writer, prefix string, lines []string) {
	for _, l := range lines {
		fmt.Fprintf(w, "  %s%s\n", prefix, l)
	}
}

// lineDiff is a longest-common-subsequence diff of two short documents:
// "- " lines are in KV only, "+ " lines in the sources only.
func lineDiff(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "+ "+b[j])
			j++
		default:
			out = append(out, "- "+a[i])
			i++
		}
	}
	return out
}
