package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"swarmvlan/spec"
	"swarmvlan/state"
)

func cmdGet(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return fmt.Errorf("usage: reconciler get KIND [NAME]")
	}
	kind := spec.KindForPlural(pos[0])
	if kind == "" {
		return fmt.Errorf("unknown kind %q (want vlan, service or host)", pos[0])
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	if len(pos) == 2 {
		value, found, err := store.GetSpec(ctx, kind, pos[1])
		if err != nil {
			return fmt.Errorf("read %s %q: %w", kind, pos[1], err)
		}
		if !found {
			return fmt.Errorf("%s %q not found", kind, pos[1])
		}
		fmt.Fprint(c.stdout, ensureNewline(string(value)))
		return nil
	}
	docs, err := store.SpecDocsOfKind(ctx, kind)
	if err != nil {
		return fmt.Errorf("list %s: %w", spec.Plural(kind), err)
	}
	for i, d := range docs {
		if i > 0 {
			fmt.Fprintln(c.stdout, "---")
		}
		fmt.Fprint(c.stdout, ensureNewline(string(d.Value)))
	}
	return nil
}

func ensureNewline(s string) string {
	if strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

func cmdDelete(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("usage: reconciler delete KIND NAME")
	}
	kind := spec.KindForPlural(pos[0])
	if kind == "" {
		return fmt.Errorf("unknown kind %q (want vlan, service or host)", pos[0])
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	found, err := store.DeleteSpec(ctx, kind, pos[1])
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, pos[1], err)
	}
	if !found {
		return fmt.Errorf("%s %q not found", kind, pos[1])
	}
	fmt.Fprintf(c.stdout, "deleted %s/%s\n", spec.Plural(kind), pos[1])
	return nil
}

func cmdStatus(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	asJSON := fs.Bool("json", false, "print the raw status documents as JSON")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	store, err := c.store()
	if err != nil {
		return err
	}
	all, err := store.ListStatus(ctx)
	if err != nil {
		return err
	}
	specs, err := store.SpecKeys(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintln(c.stdout, string(b))
		return nil
	}
	if err := printSyncLine(ctx, c.stdout, store); err != nil {
		return err
	}
	return printStatusTable(c, store, all, specs)
}

type statusRow struct{ kind, name, valid, ready, index, message string }

func printStatusTable(c *cli, store *state.Store, all map[string]map[string]json.RawMessage, specKeys []string) error {
	rows := map[string]*statusRow{}
	for _, k := range specKeys {
		kind, name, ok := store.ParseSpecKey(k)
		if !ok {
			continue
		}
		rows[spec.Plural(kind)+"/"+name] = &statusRow{kind: spec.Plural(kind), name: name, valid: "?", ready: "-", index: "-", message: "not yet reconciled"}
	}
	for section, objs := range all {
		for name, raw := range objs {
			id := section + "/" + name
			r, ok := rows[id]
			if !ok {
				r = &statusRow{kind: section, name: name, valid: "-", ready: "-", index: "-"}
				if spec.KindForPlural(section) != "" {
					r.message = "document deleted; removal in progress"
				}
				rows[id] = r
			}
			var st state.Status
			if err := json.Unmarshal(raw, &st); err != nil {
				r.message = "unreadable status: " + err.Error()
				continue
			}
			r.message = ""
			if st.ObservedIndex > 0 {
				r.index = fmt.Sprint(st.ObservedIndex)
			}
			for _, cond := range st.Conditions {
				switch cond.Type {
				case "Valid":
					r.valid = yesNo(cond.Status)
				case "Ready":
					r.ready = yesNo(cond.Status)
					if cond.Status != "True" && r.message == "" {
						r.message = cond.Message
					}
				}
			}
			if st.LastError != "" {
				r.message = st.LastError
			}
			if summary := summaryOf(st.Details); summary != "" && r.message == "" {
				r.message = summary
			}
		}
	}
	ids := make([]string, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAME\tVALID\tREADY\tINDEX\tMESSAGE")
	for _, id := range ids {
		r := rows[id]
		msg := strings.ReplaceAll(r.message, "\n", "; ")
		if len(msg) > 160 {
			msg = msg[:157] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.kind, r.name, r.valid, r.ready, r.index, msg)
	}
	return tw.Flush()
}

func yesNo(s string) string {
	switch s {
	case "True":
		return "yes"
	case "False":
		return "no"
	}
	return s
}

// summaryOf returns details.summary when a reconciler provides one.
func summaryOf(details json.RawMessage) string {
	var d struct {
		Summary string `json:"summary"`
	}
	if len(details) == 0 || json.Unmarshal(details, &d) != nil {
		return ""
	}
	return d.Summary
}
