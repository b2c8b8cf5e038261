package state

// The status records this package stores under status/, for every writer
// and reader (the reconcilers, `reconciler status`, the tests).

import "encoding/json"

// Network states reported in NetworkStatus.State.
const (
	NetworkReady   = "ready"
	NetworkWaiting = "waiting"
	NetworkInUse   = "in-use"
	NetworkAbsent  = "absent"
	NetworkError   = "error"
)

// NetworkStatus is the observed state of one Docker network.
type NetworkStatus struct {
	Name    string `json:"name"`
	ID      string `json:"id,omitempty"`
	State   string `json:"state"` // ready | waiting | in-use | absent | error
	Message string `json:"message,omitempty"`
	// Requeue asks the caller to look again later: the network is waiting
	// for something outside this call (a config network on this node, tasks
	// to drain).
	Requeue bool `json:"-"`
}

// ObjectStatus is what status/<section>/<name> holds: for a document, the
// index of the version observed, its conditions (Valid first), the last
// error and the reconciler's details.
type ObjectStatus struct {
	ObservedIndex uint64          `json:"observedIndex"`
	Conditions    []Condition     `json:"conditions,omitempty"`
	LastError     string          `json:"lastError,omitempty"`
	Details       json.RawMessage `json:"details,omitempty"`
}
