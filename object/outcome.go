package object

import "errors"

// ErrNotFound is returned by a store's Get for a key or version it does
// not hold.
var ErrNotFound = errors.New("not found")

// Outcome is what handling one key did.
type Outcome int

// Outcomes of handling a key (sink.Writer.Apply).
const (
	Failed        Outcome = iota // a store call failed; the key stays queued
	Written                      // the object was put
	Unchanged                    // the store already held these bytes
	Deleted                      // the key was removed
	NothingStored                // nothing to store and nothing stored
	Skipped                      // the object is larger than max-resource-size
	Invalid                      // the object is not a valid document
	Unstorable                   // the store can never hold its key
	Kept                         // its type is not completely listed, or deletes are held: the key was left as it is
)
