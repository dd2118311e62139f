package chain

import (
	"container/list"
	"sync"

	"github.com/snapfs/snapfs/store"
)

// lru is a cache of values capped by the sum of their sizes: the least recently used go first. A
// value larger than the whole cache is not kept.
type lru[K comparable, V any] struct {
	mu    sync.Mutex
	cap   int64
	used  int64
	size  func(V) int64
	order *list.List // front = most recent; values are *lruEntry[K, V]
	items map[K]*list.Element
}

type lruEntry[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](capacity int64, size func(V) int64) *lru[K, V] {
	return &lru[K, V]{cap: capacity, size: size, order: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry[K, V]).val, true
}

func (c *lru[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok || c.size(v) > c.cap {
		return
	}
	c.items[k] = c.order.PushFront(&lruEntry[K, V]{key: k, val: v})
	c.used += c.size(v)
	for c.used > c.cap {
		e := c.order.Back()
		ent := e.Value.(*lruEntry[K, V])
		c.order.Remove(e)
		delete(c.items, ent.key)
		c.used -= c.size(ent.val)
	}
}

// chunkCache is the cache of decoded chunks, capped by bytes and keyed by content address: a cached
// entry is right forever. (Chunk ids are not a safe key: SQLite gives a new row the largest id plus
// one, so the id of the newest chunk comes back after that chunk is freed.)
type chunkCache = lru[store.Hash, []byte]

func newChunkCache(capBytes int64) *chunkCache {
	return newLRU[store.Hash](capBytes, func(b []byte) int64 { return int64(len(b)) })
}

// mapCache is the cache of loaded chunk-map segments, capped by entries.
type mapCache = lru[segmentKey, []store.Chunk]

// newMapCache returns a cache of capBytes, but of two segments of segChunks entries at least.
func newMapCache(capBytes, segChunks int64) *mapCache {
	const entryBytes = 80 // unsafe.Sizeof(store.Chunk{})
	return newLRU[segmentKey](max(capBytes/entryBytes, 2*segChunks), func(s []store.Chunk) int64 { return int64(len(s)) })
}
