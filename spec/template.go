package spec

import (
	"io"
	"strings"
	"text/template"
)

// Swarm expands every env value and every mount's source and target as a Go
// template for each task ("{{.Task.Slot}}"), and refuses the service when one
// does not parse or names a field its context lacks (swarmkit's template
// package, with missingkey=error). templateContext has the fields of that
// context, so a template that runs here runs there.
type templateContext struct {
	Service struct {
		ID     string
		Name   string
		Labels map[string]string
	}
	Node struct {
		ID       string
		Hostname string
		Platform struct {
			Architecture string
			OS           string
		}
	}
	Task struct {
		ID   string
		Name string
		Slot string
	}
}

// templateFuncs are the functions Swarm's templates may call.
var templateFuncs = template.FuncMap{
	"join": func(s ...string) string { return strings.Join(s[1:], s[0]) },
}

// swarmTemplate returns why Swarm would refuse s as a template, or "".
// labels are the service's labels, which a template may read.
func swarmTemplate(s string, labels map[string]string) string {
	if !strings.Contains(s, "{{") {
		return ""
	}
	t, err := template.New("expansion").Option("missingkey=error").Funcs(templateFuncs).Parse(s)
	if err == nil {
		var ctx templateContext
		ctx.Service.Labels = labels
		err = t.Execute(io.Discard, &ctx)
	}
	if err != nil {
		return "is expanded by Swarm as a template, which fails: " + strings.TrimPrefix(err.Error(), "template: expansion:")
	}
	return ""
}
