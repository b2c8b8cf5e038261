package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// AllowEmptyMarker is the file that, at the top of the synced path, lets a
// commit without any document empty the spec tree. Without it (or
// --git-allow-empty) such a commit is refused: a wrong path or a bad merge
// must not wipe the cluster.
const AllowEmptyMarker = ".swarmvlan-allow-empty"

// errNoPath is Files' error for a commit without the source's path: it
// holds no document there.
var errNoPath = errors.New("no directory")

// Commit is a commit's identity as the status shows it.
type Commit struct {
	Hash    string    `json:"hash"`
	Author  string    `json:"author"`
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
	// Branch is the branch it was read from.
	Branch string `json:"branch,omitempty"`
}

// File is one document file of a commit.
type File struct {
	// Path is relative to the repository's root.
	Path string
	Data []byte
}

// Repo is a bare, in-memory clone of the source, fetched again at every
// sync: a force-push is just a new commit at the branch's head.
type Repo struct {
	src    Source
	repo   *git.Repository
	remote *git.Remote
}

// Open prepares the clone; it does not contact the remote.
func Open(src Source) (*Repo, error) {
	r, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, fmt.Errorf("git: init: %w", err)
	}
	rem, err := r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{src.URL}})
	if err != nil {
		return nil, fmt.Errorf("git: remote %s: %s", src.URL, src.Redact(err))
	}
	return &Repo{src: src, repo: r, remote: rem}, nil
}

// Source is what the repository was opened with.
func (r *Repo) Source() Source { return r.src }

// Fetch resolves the branch (the remote's HEAD when none is set), fetches
// its head commit if it is not here yet and returns it. Errors carry no
// credentials.
func (r *Repo) Fetch(ctx context.Context) (Commit, error) {
	refs, err := r.remote.ListContext(ctx, &git.ListOptions{Auth: r.src.Auth, CABundle: r.src.CABundle})
	if err != nil {
		if errors.Is(err, transport.ErrEmptyRemoteRepository) {
			return Commit{}, fmt.Errorf("git: %s: the repository has no commit", r.src.URL)
		}
		return Commit{}, fmt.Errorf("git: list refs of %s: %s", r.src.URL, r.src.Redact(err))
	}
	branch := r.src.Branch
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, ref := range refs {
		byName[ref.Name()] = ref
	}
	if branch == "" {
		head := byName[plumbing.HEAD]
		if head == nil || head.Type() != plumbing.SymbolicReference || !head.Target().IsBranch() {
			return Commit{}, fmt.Errorf("git: %s does not say which branch its HEAD is; set --git-branch", r.src.URL)
		}
		branch = head.Target().Short()
	}
	ref := byName[plumbing.NewBranchReferenceName(branch)]
	if ref == nil {
		return Commit{}, fmt.Errorf("git: %s has no branch %q", r.src.URL, branch)
	}
	hash := ref.Hash()
	if _, err := r.repo.CommitObject(hash); err != nil {
		spec := config.RefSpec(fmt.Sprintf("+refs/heads/%s:refs/remotes/origin/%s", branch, branch))
		err := r.remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs: []config.RefSpec{spec}, Auth: r.src.Auth, CABundle: r.src.CABundle, Tags: git.NoTags, Force: true,
		})
		if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
			return Commit{}, fmt.Errorf("git: fetch %s from %s: %s", branch, r.src.URL, r.src.Redact(err))
		}
	}
	c, err := r.Commit(hash.String())
	if err != nil {
		return Commit{}, err
	}
	c.Branch = branch
	return c, nil
}

// Has reports whether the commit hash is in the clone.
func (r *Repo) Has(hash string) bool {
	_, err := r.repo.CommitObject(plumbing.NewHash(hash))
	return err == nil
}

// Commit describes a commit of the clone.
func (r *Repo) Commit(hash string) (Commit, error) {
	co, err := r.repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return Commit{}, fmt.Errorf("git: commit %s: %w", hash, err)
	}
	return Commit{
		Hash:    co.Hash.String(),
		Author:  fmt.Sprintf("%s <%s>", co.Author.Name, co.Author.Email),
		Time:    co.Author.When.UTC(),
		Message: strings.TrimSpace(co.Message),
	}, nil
}

// Files returns the document files of commit hash under the source's
// path, and whether the path holds AllowEmptyMarker. Every subdirectory is
// read; a file is a document file when its name ends in .yaml, .yml or
// .json; files and directories whose name starts with "." are skipped, as
// are symlinks and submodules. Files come sorted by path.
func (r *Repo) Files(hash string) (files []File, allowEmpty bool, err error) {
	co, err := r.repo.CommitObject(plumbing.NewHash(hash))
	if err != nil {
		return nil, false, fmt.Errorf("git: commit %s: %w", hash, err)
	}
	tree, err := co.Tree()
	if err != nil {
		return nil, false, fmt.Errorf("git: tree of %s: %w", hash, err)
	}
	root := r.src.Path
	if root != "" {
		if tree, err = tree.Tree(root); err != nil {
			return nil, false, fmt.Errorf("git: commit %s: %w %q (--git-path)", short(hash), errNoPath, root)
		}
	}
	if _, err := tree.File(AllowEmptyMarker); err == nil {
		allowEmpty = true
	}
	walker := object.NewTreeWalker(tree, true, nil)
	defer walker.Close()
	for {
		name, entry, err := walker.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, fmt.Errorf("git: walk %s: %w", short(hash), err)
		}
		if hidden(name) || entry.Mode != filemode.Regular && entry.Mode != filemode.Executable {
			continue
		}
		switch path.Ext(name) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		blob, err := r.repo.BlobObject(entry.Hash)
		if err != nil {
			return nil, false, fmt.Errorf("git: %s: %w", name, err)
		}
		rd, err := blob.Reader()
		if err != nil {
			return nil, false, fmt.Errorf("git: %s: %w", name, err)
		}
		data, err := io.ReadAll(rd)
		rd.Close()
		if err != nil {
			return nil, false, fmt.Errorf("git: %s: %w", name, err)
		}
		files = append(files, File{Path: path.Join(root, name), Data: data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, allowEmpty, nil
}

// hidden reports whether any segment of a slash path starts with ".".
func hidden(name string) bool {
	for _, seg := range strings.Split(name, "/") {
		if strings.HasPrefix(seg, ".") {
			return true
		}
	}
	return false
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
