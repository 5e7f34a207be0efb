/* list.h -- intrusive circular doubly linked list: O(1) insert and unlink, no allocation */
#ifndef TT_CORE_LIST_H
#define TT_CORE_LIST_H

#include "core/compat.h"

/** A list head or a node embedded in its owner. An unlinked node points to itself. */
typedef struct tt_list {
    struct tt_list *next;
    struct tt_list *prev;
} tt_list_t;

/** Makes `l` an empty list (or an unlinked node). */
static inline void tt_list_init(tt_list_t *l);
/** True when the list has no nodes (or the node is unlinked). */
static inline bool tt_list_is_empty(const tt_list_t *l);
/** Links `n` before `head`, i.e. at the tail. `n` must be unlinked. */
static inline void tt_list_push_tail(tt_list_t *head, tt_list_t *n);
/** Links `n` right after `head`, i.e. at the front. `n` must be unlinked. */
static inline void tt_list_push_head(tt_list_t *head, tt_list_t *n);
/** Unlinks `n` and leaves it unlinked; a no-op on an unlinked node. */
static inline void tt_list_remove(tt_list_t *n);

#define tt_list_first(head) ((head)->next)
#define tt_list_foreach_safe(pos, tmp, head) \
    for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

/* inline definitions */
static inline void tt_list_init(tt_list_t *l)
{
    l->next = l->prev = l;
}
static inline bool tt_list_is_empty(const tt_list_t *l)
{
    return l->next == l;
}
static inline void tt_list_push_tail(tt_list_t *head, tt_list_t *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void tt_list_push_head(tt_list_t *head, tt_list_t *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}
static inline void tt_list_remove(tt_list_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

#endif
