package reconcile

// Action is what a planner decided to do with one object it converges.
type Action int

// The actions a plan can hold.
const (
	ActionNone     Action = iota
	ActionCreate          // absent: create it
	ActionRecreate        // wrong and unused: remove, then create
	ActionBlocked         // wrong but in use: leave it, report, requeue
	ActionConflict        // same name, not ours: leave it, report
)

func (a Action) String() string {
	return [...]string{"none", "create", "recreate", "blocked", "conflict"}[a]
}

// Plan is a planner's decision with the reason for it.
type Plan struct {
	Action Action
	Reason string
}

// MadeMessage is the status message once the plan made its object.
func (p Plan) MadeMessage() string {
	if p.Action == ActionRecreate {
		return "recreated: " + p.Reason
	}
	return "created"
}
