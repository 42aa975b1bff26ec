"""Fast multi-row inserts for bulk imports (registry CSVs): the rows ``bulk_create`` (and simple-history's
``bulk_create_with_history``) would write, without their per-value expression machinery, which was most of an
import's time: one ``INSERT ... VALUES (...), (...)`` per batch, each value prepared once by its field
(``get_db_prep_save``; dates memoised, they repeat), new primary keys read back with ``RETURNING`` in row order
(as Django's own ``bulk_create`` relies on, SQLite >= 3.35 and PostgreSQL), and the audit rows built from the
same prepared values."""

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import DateField
from django.utils import timezone

HISTORY_FIELDS = ("history_date", "history_change_reason", "history_type", "history_user_id")


def _execute(connection, table, columns, rows, returning=None, batch=1000):
    qn = connection.ops.quote_name
    per_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    head = f"INSERT INTO {qn(table)} ({', '.join(qn(c) for c in columns)}) VALUES "
    tail = f" RETURNING {qn(returning)}" if returning else ""
    size = max(1, min(batch, (30000 if connection.vendor == "sqlite" else 60000) // len(columns)))
    keys = []
    with connection.cursor() as cursor:
        for i in range(0, len(rows), size):
            chunk = rows[i:i + size]
            cursor.execute(head + ", ".join([per_row] * len(chunk)) + tail, [v for row in chunk for v in row])
            if returning:
                keys.extend(k for (k,) in cursor.fetchall())
    return keys


def insert(model, objs, *, history_user=None, history=True, batch=1000):
    """Insert ``objs`` (new instances of ``model``), set their primary keys, and, when the model is tracked by
    django-simple-history and ``history``, write one ``+`` history row each by ``history_user``."""
    if not objs:
        return objs
    connection = connections[DEFAULT_DB_ALIAS]  # the object itself: the proxy costs a lookup per value
    meta = model._meta
    pk = meta.pk
    given_pk = getattr(objs[0], pk.attname) is not None
    fields = [f for f in meta.concrete_fields if given_pk or not f.primary_key]
    now = timezone.now()
    auto = {f.attname for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)}
    fixed = {a: meta.get_field(a).get_db_prep_save(now, connection) for a in auto} if auto else {}
    memo = {f.attname: {} for f in fields if isinstance(f, DateField) and f.attname not in auto}
    rows = []
    for obj in objs:
        row = []
        for f in fields:
            a = f.attname
            if a in fixed:
                setattr(obj, a, now)  # one time stamp for the whole insert
                row.append(fixed[a])
                continue
            v = getattr(obj, a)
            cache = memo.get(a)
            if cache is None:
                row.append(f.get_db_prep_save(v, connection))
            else:
                if v not in cache:
                    cache[v] = f.get_db_prep_save(v, connection)
                row.append(cache[v])
        rows.append(row)
    keys = _execute(connection, meta.db_table, [f.column for f in fields], rows,
                    returning=None if given_pk else pk.column, batch=batch)
    for obj, key in zip(objs, keys):
        setattr(obj, pk.attname, key)
    for obj in objs:
        obj._state.adding, obj._state.db = False, connection.alias
    if history and hasattr(model, "history"):
        _history(connection, model.history.model, fields, objs, rows, now, history_user, batch)
    return objs


def _history(connection, hist, fields, objs, rows, now, user, batch):
    at = {f.attname: i for i, f in enumerate(fields)}
    pk_name = objs[0]._meta.pk.attname
    hist_fields = [f for f in hist._meta.concrete_fields if not f.primary_key]
    unknown = [f.attname for f in hist_fields if f.attname not in at and f.attname not in HISTORY_FIELDS
               and f.attname != pk_name]
    if unknown:
        raise ValueError(f"history fields without a value: {unknown}")
    date = hist._meta.get_field("history_date").get_db_prep_save(now, connection)
    # the request's user when none is given (HistoryRequestMiddleware), the same for every row of this insert
    u = user if user is not None else hist.get_default_history_user(objs[0])
    out = []
    for obj, row in zip(objs, rows):
        extra = {"history_date": date, "history_change_reason": "", "history_type": "+",
                 "history_user_id": getattr(u, "pk", None), pk_name: obj.pk}
        out.append([row[at[f.attname]] if f.attname in at else extra[f.attname] for f in hist_fields])
    _execute(connection, hist._meta.db_table, [f.column for f in hist_fields], out, batch=batch)
