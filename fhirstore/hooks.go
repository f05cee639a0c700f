package fhirstore

// Hooks are optional callbacks through which a Store reports events for
// telemetry (see package metrics). Every field may be nil. Callbacks run on
// the goroutine that caused the event, so they must be cheap and safe for
// concurrent use.
type Hooks struct {
	// RollForward is called after a claimed version was completed by
	// someone other than the writer that claimed it: a writer that met the
	// claim while writing the resource, or Verify with repair.
	RollForward func()
}

func (s *Store) notifyRollForward() {
	if s.hooks.RollForward != nil {
		s.hooks.RollForward()
	}
}
