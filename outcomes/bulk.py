"""Fast multi-row inserts for bulk imports (registry CSVs): the rows ``bulk_create`` (and simple-history's
``bulk_create_with_history``) would write, without their per-value expression machinery, which was most of an
import's time: one ``INSERT ... VALUES (...), (...)`` per batch (on PostgreSQL ``INSERT ... SELECT * FROM
UNNEST(...)``, one array per column, as Django's own ``bulk_create`` there), new primary keys read back with
``RETURNING`` in row order (as Django's own ``bulk_create`` relies on, SQLite >= 3.35 and PostgreSQL), and the
audit rows built from the same prepared values.

``insert_rows(model, attnames, rows)`` takes plain tuples (one value per named field, no model instances: building
and flattening an instance per row was the next largest cost); every other concrete field gets what
``Model(**kwargs)`` would give it: its default (a callable default called per row), ``auto_now`` /
``auto_now_add`` one time stamp for the whole insert. Values are prepared column by column with the field's own
``get_db_prep_save``, except where that is the identity: text for a text column, an ``int`` for an integer or
foreign-key column, a ``float`` for a float column, a ``bool`` for a boolean one, ``None`` for any; a date goes
straight to the backend's ``adapt_datefield_value`` (what ``get_db_prep_save`` ends in), a value repeated as the
same object (a time stamp) is prepared once. Statements come in few lengths (``_statement_sizes``) and a column of
one value is sent once on PostgreSQL. ``insert(model, objs)`` does the same for instances and sets their pks."""

import datetime as dt

from django.db import DEFAULT_DB_ALIAS, connections
from django.db import models
from django.db.models import DateField, DateTimeField
from django.utils import timezone

STATEMENT_ROWS = 1000  # rows per INSERT statement (at most)
HISTORY_FIELDS = ("history_date", "history_change_reason", "history_type", "history_user_id")
_NONE = type(None)


def _statement_sizes(n, limit):
    """Rows per INSERT for ``n`` rows at most ``limit`` each, in as few statements as can be, of (at most) two
    lengths: the driver caches each distinct statement text it prepares (SQLite: 128, each with its compiled
    program), so callers that insert batches of one size send the same few statements again and again."""
    if n <= 0:
        return []
    k = -(-n // limit)
    q, r = divmod(n, k)
    return [q + 1] * r + [q] * (k - r)


def _unnest_types(connection, fields):
    """PostgreSQL: each field's column type, for ``INSERT ... SELECT * FROM UNNEST(%s::type[], ...)`` (what Django's
    own ``bulk_create`` sends there since 5.2: one array per column, so the driver neither merges nor the server
    plans one placeholder per value, which made a VALUES list of a thousand rows slow); None where a field does not
    allow it (the same conditions as Django's) or on another database."""
    if connection.vendor != "postgresql":
        return None
    types = []
    for f in fields:
        base = f.target_field if f.is_relation else f
        if hasattr(f, "get_placeholder") or base.get_internal_type() not in connection.data_types:
            return None
        types.append(f.db_type(connection).split("(")[0])  # varchar[], not varchar(32)[]: nothing truncated
    return types


def _execute(connection, table, fields, columns, returning=None, batch=STATEMENT_ROWS):
    """Insert the rows given as ``columns`` (one list of prepared values per field of ``fields``); the new values
    of column ``returning`` in row order when asked."""
    qn = connection.ops.quote_name
    head = f"INSERT INTO {qn(table)} ({', '.join(qn(f.column) for f in fields)}) "
    tail = f" RETURNING {qn(returning)}" if returning else ""
    n = len(columns[0])
    keys = []
    types = _unnest_types(connection, fields)
    with connection.cursor() as cursor:
        if types is not None:
            # a column of one value throughout (defaults, time stamps, the history type) is sent once, not as an
            # array: the driver quotes every array element in Python
            same = [column.count(column[0]) == n for column in columns]
            if all(same):
                same[0] = False
            select = ", ".join(f"(%s)::{t}" if s else f"u.c{i}" for i, (t, s) in enumerate(zip(types, same)))
            arrays = ", ".join(f"(%s)::{t}[]" for t, s in zip(types, same) if not s)
            names = ", ".join(f"c{i}" for i, s in enumerate(same) if not s)
            sql = head + f"SELECT {select} FROM UNNEST({arrays}) AS u({names})" + tail
            scalars = [column[0] for column, s in zip(columns, same) if s]
            for i in range(0, n, batch):
                cursor.execute(sql, scalars + [column[i:i + batch] for column, s in zip(columns, same) if not s])
                if returning:
                    keys.extend(key for (key,) in cursor.fetchall())
            return keys
        rows = list(zip(*columns))
        per_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        size = max(1, min(batch, (30000 if connection.vendor == "sqlite" else 60000) // len(fields)))
        sql = {}
        i = 0
        for k in _statement_sizes(n, size):
            chunk = rows[i:i + k]
            i += k
            if k not in sql:
                sql[k] = head + "VALUES " + ", ".join([per_row] * k) + tail
            cursor.execute(sql[k], [v for row in chunk for v in row])
            if returning:
                keys.extend(key for (key,) in cursor.fetchall())
    return keys


def _passthrough(field):
    """The Python types whose ``get_db_prep_save`` is the identity for ``field`` (None: always call it)."""
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    if isinstance(field, (models.CharField, models.TextField)) and not isinstance(field, models.JSONField):
        return (str, _NONE)
    if isinstance(field, (models.IntegerField, models.AutoField)):  # AutoField, SmallIntegerField, ... included
        return (int, _NONE)
    if isinstance(field, models.FloatField):
        return (float, _NONE)
    if isinstance(field, models.BooleanField):
        return (bool, _NONE)
    return None


def _prepare(field, column, connection):
    """``column`` (a sequence of Python values) as the values the driver receives."""
    ok = _passthrough(field)
    prep = field.get_db_prep_save
    if ok is not None:
        return [v if type(v) in ok else prep(v, connection) for v in column]
    if isinstance(field, DateField) and not isinstance(field, DateTimeField):
        adapt = connection.ops.adapt_datefield_value  # what get_db_prep_save does with a date
        return [None if v is None else adapt(v) if type(v) is dt.date else prep(v, connection) for v in column]
    out, last, done = [], _NONE, None  # a value repeated (the same object: one time stamp) is prepared once
    for v in column:
        if v is not last:
            last, done = v, prep(v, connection)
        out.append(done)
    return out


def insert_rows(model, attnames, rows, *, history_user=None, history=True, batch=STATEMENT_ROWS, now=None, _instance=None):
    """Insert ``rows`` (tuples of values for the fields named by ``attnames``, e.g. ``patient_id``) as new rows of
    ``model``, returning their primary keys in order; when the model is tracked by django-simple-history and
    ``history``, one ``+`` history row each by ``history_user`` (default: the request's user)."""
    if not rows:
        return []
    connection = connections[DEFAULT_DB_ALIAS]  # the object itself: the proxy costs a lookup per value
    meta = model._meta
    pk = meta.pk
    attnames = list(attnames)
    given = {a: i for i, a in enumerate(attnames)}
    if len(given) != len(attnames):
        raise ValueError(f"a field named twice: {attnames}")
    unknown = set(given) - {f.attname for f in meta.concrete_fields}
    if unknown:
        raise ValueError(f"not concrete fields of {meta.label}: {sorted(unknown)}")
    given_pk = pk.attname in given
    fields = [f for f in meta.concrete_fields if given_pk or not f.primary_key]
    now = now or timezone.now()
    n = len(rows)
    given_cols = list(zip(*rows))
    if len(given_cols) != len(attnames):
        raise ValueError(f"rows of {len(given_cols)} values for {len(attnames)} fields")
    columns = []
    for f in fields:
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            columns.append([f.get_db_prep_save(now, connection)] * n)  # one time stamp for the whole insert
        elif f.attname in given:
            columns.append(_prepare(f, given_cols[given[f.attname]], connection))
        elif f.has_default() and callable(f.default):
            columns.append(_prepare(f, [f.get_default() for _ in range(n)], connection))
        else:
            columns.append([f.get_db_prep_save(f.get_default(), connection)] * n)
    keys = _execute(connection, meta.db_table, fields, columns, returning=None if given_pk else pk.column,
                    batch=batch)
    if given_pk:
        keys = list(given_cols[given[pk.attname]])
    if history and hasattr(model, "history"):
        _history(connection, model.history.model, fields, columns, keys, pk.attname, now, history_user, batch,
                 _instance if _instance is not None else model())
    return keys


def insert(model, objs, *, history_user=None, history=True, batch=STATEMENT_ROWS):
    """Insert ``objs`` (new instances of ``model``), set their primary keys, and, when the model is tracked by
    django-simple-history and ``history``, write one ``+`` history row each by ``history_user``."""
    if not objs:
        return objs
    meta = model._meta
    pk = meta.pk
    given_pk = getattr(objs[0], pk.attname) is not None
    fields = [f for f in meta.concrete_fields if given_pk or not f.primary_key]
    now = timezone.now()
    auto = [f.attname for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    for obj in objs:
        for a in auto:
            setattr(obj, a, now)
    attnames = [f.attname for f in fields]
    keys = insert_rows(model, attnames, [tuple(getattr(obj, a) for a in attnames) for obj in objs],
                       history_user=history_user, history=history, batch=batch, now=now, _instance=objs[0])
    if not given_pk:
        for obj, key in zip(objs, keys):
            setattr(obj, pk.attname, key)
    for obj in objs:
        obj._state.adding, obj._state.db = False, DEFAULT_DB_ALIAS
    return objs


def _history(connection, hist, fields, columns, pks, pk_name, now, user, batch, instance):
    """The ``+`` history rows of an insert, from its prepared ``columns`` (one list per field of ``fields``)."""
    at = {f.attname: i for i, f in enumerate(fields)}
    hist_fields = [f for f in hist._meta.concrete_fields if not f.primary_key]
    unknown = [f.attname for f in hist_fields if f.attname not in at and f.attname not in HISTORY_FIELDS
               and f.attname != pk_name]
    if unknown:
        raise ValueError(f"history fields without a value: {unknown}")
    date = hist._meta.get_field("history_date").get_db_prep_save(now, connection)
    # the request's user when none is given (HistoryRequestMiddleware), the same for every row of this insert
    u = user if user is not None else hist.get_default_history_user(instance)
    extra = {"history_date": date, "history_change_reason": "", "history_type": "+", "history_user_id": getattr(u, "pk", None)}
    n = len(pks)
    cols = [columns[at[f.attname]] if f.attname in at else pks if f.attname == pk_name else [extra[f.attname]] * n
            for f in hist_fields]
    _execute(connection, hist._meta.db_table, hist_fields, cols, batch=batch)
