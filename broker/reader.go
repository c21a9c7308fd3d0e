package broker

// Reader reads one Dramatiq namespace of one Redis. It is shared by every
// scrape and safe for concurrent use.
type Reader struct{}
