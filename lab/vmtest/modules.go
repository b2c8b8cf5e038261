package vmtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// kindModules maps an rtnetlink link kind to the kernel module that
// provides it.
var kindModules = map[string]string{
	"vlan":    "8021q",
	"bond":    "bonding",
	"macvlan": "macvlan",
	"ipvlan":  "ipvlan",
	"veth":    "veth",
	"dummy":   "dummy",
	"bridge":  "bridge",
	"vxlan":   "vxlan",
}

// moduleParams are the parameters a module is loaded with: bonding and
// dummy would otherwise create bond0 and dummy0 on load.
var moduleParams = map[string]string{
	"bonding": "max_bonds=0",
	"dummy":   "numdummies=0",
}

// module is one kernel module to load, after those it depends on.
type module struct {
	Name   string
	Path   string // on this machine, under the unpacked kernel
	Params string
}

// modName is a module's name as the kernel spells it: dashes are underscores.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// indexModules finds every module file under dir (lib/modules/<version>).
func indexModules(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name, ok := strings.CutSuffix(d.Name(), ".ko"); ok && !d.IsDir() {
			idx[modName(name)] = path
		}
		return nil
	})
	return idx, err
}

// modinfoDepends reads the "depends=" entry of a module's .modinfo section.
func modinfoDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("module %s has no .modinfo section", path)
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("module %s: .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			var deps []string
			for _, d := range strings.Split(string(v), ",") {
				if d != "" {
					deps = append(deps, modName(d))
				}
			}
			return deps, nil
		}
	}
	return nil, nil
}

// resolveModules returns the modules for the link kinds, each after the
// modules it depends on (read from .modinfo), each once. A kind whose
// module is not in the tree is assumed built in.
func resolveModules(modDir string, kinds []string) ([]module, error) {
	idx, err := indexModules(modDir)
	if err != nil {
		return nil, fmt.Errorf("index modules under %s: %w", modDir, err)
	}
	var out []module
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		case 2:
			return nil
		}
		path, ok := idx[name]
		if !ok {
			return fmt.Errorf("module %s (needed by %s) not found under %s", name, strings.Join(chain, " -> "), modDir)
		}
		state[name] = 1
		deps, err := modinfoDepends(path)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, module{Name: name, Path: path, Params: moduleParams[name]})
		return nil
	}
	for _, k := range kinds {
		name, ok := kindModules[k]
		if !ok {
			return nil, fmt.Errorf("link kind %q: no module known for it", k)
		}
		if _, ok := idx[modName(name)]; !ok {
			continue // built into the kernel
		}
		if err := visit(modName(name), []string{"kind " + k}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sharedLibs lists the files a dynamically linked binary needs to start:
// its interpreter and, recursively, the libraries it names, each as
// (path in the image, path on this machine).
func sharedLibs(bin string) ([][2]string, error) {
	dirs := []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}
	var out [][2]string
	seen := map[string]bool{}
	var visit func(path string) error
	visit = func(path string) error {
		f, err := elf.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: interpreter: %w", path, err)
			}
			interp := string(bytes.TrimRight(b, "\x00"))
			if !seen[interp] {
				seen[interp] = true
				out = append(out, [2]string{interp, interp})
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, lib := range libs {
			found := ""
			for _, d := range dirs {
				if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
					found = filepath.Join(d, lib)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("%s needs %s, not found in %v", path, lib, dirs)
			}
			if seen[found] {
				continue
			}
			seen[found] = true
			out = append(out, [2]string{found, found})
			if err := visit(found); err != nil {
				return err
			}
		}
		return nil
	}
	return out, visit(bin)
}
