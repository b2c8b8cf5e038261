package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"swarmvlan/spec/compose"
)

// cmdConvert turns compose files into Service documents: YAML on stdout, or
// one file per service under -o DIR. Keys it cannot express go to stderr
// by path; --strict makes any of them an error.
func cmdConvert(ctx context.Context, c *cli, args []string) error {
	fs := c.flags()
	files := &stringList{}
	fs.Var(files, "f", "compose file; later files override earlier ones (repeatable)")
	vlans := &stringList{}
	fs.Var(vlans, "vlan", "NETWORK[=VLAN]: the compose network (its key or Docker name) is that swarmvlan VLAN (default: the same name) (repeatable)")
	out := fs.String("o", "", "write each document to DIR/<name>.yaml instead of stdout")
	strict := fs.Bool("strict", false, "fail when any key cannot be converted")
	name := fs.String("project-name", "", "compose project name (default: the first file's directory)")
	profiles := &stringList{}
	fs.Var(profiles, "profile", "compose profile whose services are converted too (repeatable)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	*files = append(*files, pos...)
	opts := compose.Options{Files: *files, Env: os.Environ(), VLANs: map[string]string{}, Name: *name, Profiles: *profiles}
	for _, v := range *vlans {
		net, vlan, ok := strings.Cut(v, "=")
		if !ok {
			vlan = net
		}
		if net == "" || vlan == "" {
			return fmt.Errorf("--vlan %q: want NETWORK or NETWORK=VLAN", v)
		}
		opts.VLANs[net] = vlan
	}
	res, err := compose.Convert(ctx, opts)
	if err != nil {
		return err
	}
	for _, i := range res.Issues {
		fmt.Fprintf(c.stderr, "not converted: %s\n", i)
	}
	if *strict && len(res.Issues) > 0 {
		fmt.Fprintf(c.stderr, "%d key(s) not converted (--strict); nothing written\n", len(res.Issues))
		return exitError{code: 1}
	}
	if len(res.Services) == 0 {
		return errors.New("no service could be converted")
	}
	if *out == "" {
		b, err := compose.Marshal(res.Services...)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(b)
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, s := range res.Services {
		b, err := compose.Marshal(s)
		if err != nil {
			return err
		}
		p := filepath.Join(*out, s.Metadata.Name+".yaml")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s: Service %s\n", p, s.Metadata.Name)
	}
	return nil
}
