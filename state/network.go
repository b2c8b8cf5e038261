package state

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

// Failed is s in the error state, with err as its message.
func (s NetworkStatus) Failed(err error) NetworkStatus {
	s.State, s.Message = NetworkError, err.Error()
	return s
}
