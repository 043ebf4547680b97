"""``/``: the status page a technician opens on the gateway (phone-readable).

The server renders the whole page (it is readable without JavaScript); a
small inline script fetches ``/api/status`` every few seconds and redraws
the same sections with a mirror of the Python renderer below.  Nothing is
loaded from elsewhere (gateways are offline): no framework, font or CDN,
and the Content-Security-Policy allows only this page's own script and
style (by hash) and fetches to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import time
from html import escape
from typing import Any

__all__ = ["CSP", "alarm_rows", "render_page"]

REFRESH_S = 5

_STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:8px;max-width:60em;color:#222}
h1{font-size:1.2em;margin:.2em 0}h2{font-size:1.05em;margin:1em 0 .3em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:2px 6px;vertical-align:top}
tr:nth-child(even){background:#f4f4f4}.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#fff;background:#2a7d2a}.down{color:#fff;background:#b22}.starting{background:#ddd}
.st{padding:0 6px;border-radius:3px;font-weight:bold}.bad{color:#b22}.unc{color:#a60}
.dev{border:1px solid #ccc;border-radius:4px;padding:6px;margin:8px 0}.muted{color:#777}
"""

_SCRIPT = """
(function(){
var R=%d;
function e(s){return String(s==null?'':s).replace(/[&<>"']/g,function(c){
return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
function t(ms){return ms==null?'-':new Date(ms).toISOString().replace('T',' ').slice(0,19)+' UTC';}
function age(s){if(s==null)return '-';s=Math.round(s);if(s<120)return s+' s';
if(s<7200)return Math.round(s/60)+' min';if(s<172800)return Math.round(s/3600)+' h';
return Math.round(s/86400)+' d';}
function bytes(n){if(n<1024)return n+' B';if(n<1048576)return (n/1024).toFixed(1)+' KB';
return (n/1048576).toFixed(1)+' MB';}
function val(v){if(v==null)return '-';if(typeof v==='number'&&!Number.isInteger(v))
return String(Math.round(v*1e4)/1e4);return typeof v==='object'?JSON.stringify(v):String(v);}
function state(c){if(c.connected)return 'up';return (c.errors>0?'down':'starting');}
function kv(rows){return '<table>'+rows.map(function(r){return '<tr><th>'+e(r[0])+'</th><td>'+
r[1]+'</td></tr>';}).join('')+'</table>';}
function alarmRows(x){if(Array.isArray(x))return x.filter(function(a){return a&&a.device;});
var out=[];Object.keys(x||{}).sort().forEach(function(dev){(x[dev]||[]).forEach(function(a){
var r={};for(var k in a)r[k]=a[k];r.device=dev;out.push(r);});});return out;}
function render(d){
var u=d.uplink,b=d.buffer,h='';
h+='<h2>Uplink</h2>'+kv([['broker',e(d.broker)],['state','<span class="st '+(u.connected?'up':'down')+
'">'+(u.connected?'connected':'down')+'</span>'],['connected since',e(t(u.connected_since_ms))],
['backlog',e(b.depth)+' batches'],['sent / acked',e(u.sent)+' / '+e(u.acked)],
['last error','<span class="bad">'+e(u.last_error||'-')+'</span>']]);
h+='<h2>Buffer</h2>'+kv([['batches',e(b.depth)],['size',e(bytes(b.bytes))],
['oldest',e(age(b.oldest_age_s))],['dropped',e(b.dropped_samples)+' samples']]);
h+='<h2>Devices</h2>';
var names=Object.keys(d.devices).sort();if(!names.length)h+='<p class="muted">no devices</p>';
names.forEach(function(n){var c=d.devices[n],i=(d.device_info||{})[n]||{},s=state(c),
l=(d.latest||{})[n]||{values:{}},units=i.units||{},bad=l.bad||{},unc=l.uncertain||{};
h+='<div class="dev" data-device="'+e(n)+'" data-state="'+s+'"><b>'+e(n)+'</b> <span class="muted">'+
e(i.driver||'')+'</span> <span class="st '+s+'">'+s+'</span><br><span class="muted">polls '+
e(c.polls)+', errors '+e(c.errors)+', last good '+e(t(c.last_good_ms))+'</span>';
if(c.last_error)h+='<br><span class="bad">last error: '+e(c.last_error)+'</span>';
h+='<table><tr><th>tag</th><th class="num">value</th><th>unit</th><th>quality</th></tr>';
Object.keys(l.values).forEach(function(k){var q=bad[k]?'<span class="bad">bad'+
(bad[k]===c.last_error?'':': '+e(bad[k]))+'</span>':
unc[k]?'<span class="unc">uncertain: '+e(unc[k])+'</span>':'good';
h+='<tr data-tag="'+e(k)+'"><td>'+e(k)+'</td><td class="num">'+e(val(l.values[k]))+'</td><td>'+
e(units[k]||'')+'</td><td>'+q+'</td></tr>';});
h+='</table></div>';});
h+='<h2>Active alarms</h2>';
if(!('alarms' in d))h+='<p class="muted">not available on this agent</p>';
else{var rows=alarmRows(d.alarms);if(!rows.length)h+='<p class="muted">none</p>';
else h+='<table>'+rows.map(function(a){return '<tr><td>'+e(a.device)+'</td><td>'+
e(a.alarm)+'</td><td>'+e(a.tag)+'</td><td>'+e(a.severity)+'</td><td class="num">'+
e(val(a.value))+'</td><td>'+e(t(a.since))+'</td></tr>';}).join('')+'</table>';}
h+='<h2>Recent problems</h2>';
var p=(d.problems||[]).slice().reverse();if(!p.length)h+='<p class="muted">none</p>';
else h+='<table>'+p.map(function(x){return '<tr><td>'+e(t(x.ts_ms))+'</td><td class="bad">'+
e(x.level)+'</td><td>'+e(x.message)+'</td></tr>';}).join('')+'</table>';
return h;}
var n=0;
function tick(){fetch('/api/status'+location.search,{cache:'no-store'}).then(function(r){
if(!r.ok)throw new Error('HTTP '+r.status);return r.json();}).then(function(d){
document.getElementById('main').innerHTML=render(d);n+=1;var u=document.getElementById('updated');
u.textContent='updated '+t(d.ts);u.className='muted';u.setAttribute('data-refreshes',n);
}).catch(function(err){var u=document.getElementById('updated');
u.textContent='cannot reach the agent ('+err.message+'); retrying';u.className='bad';
}).finally(function(){setTimeout(tick,R*1000);});}
setTimeout(tick,R*1000);
})();
""" % REFRESH_S  # noqa: UP031 - the script is full of braces; %-format keeps it readable


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


#: Only this page's own style and script (by hash), fetches to this origin.
CSP = (f"default-src 'none'; style-src {_hash(_STYLE)}; script-src {_hash(_SCRIPT)}; "
       "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'")


# -- the Python mirror of render() above: the page without JavaScript ----
def alarm_rows(alarms: Any) -> list[dict[str, Any]]:
    """The processing stage's ``{device: [alarm, ...]}`` as one list with ``device`` set."""
    if isinstance(alarms, dict):
        return [{**a, "device": dev} for dev, items in sorted(alarms.items()) for a in items
                if isinstance(a, dict)]
    return [a for a in alarms or [] if isinstance(a, dict) and "device" in a]


def _t(ms: int | None) -> str:
    return "-" if ms is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    s = round(s)
    for limit, unit, div in ((120, "s", 1), (7200, "min", 60), (172800, "h", 3600)):
        if s < limit:
            return f"{round(s / div)} {unit}"
    return f"{round(s / 86400)} d"


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def _val(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return str(round(v, 4))
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _state(c: dict[str, Any]) -> str:
    return "up" if c.get("connected") else ("down" if c.get("errors") else "starting")


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>"
                               for k, v in rows) + "</table>"


def _device(name: str, d: dict[str, Any]) -> str:
    c = d["devices"][name]
    info = d.get("device_info", {}).get(name, {})
    latest = d.get("latest", {}).get(name, {"values": {}})
    units, bad, unc = info.get("units", {}), latest.get("bad", {}), latest.get("uncertain", {})
    s = _state(c)
    h = (f'<div class="dev" data-device="{escape(name)}" data-state="{s}"><b>{escape(name)}</b> '
         f'<span class="muted">{escape(info.get("driver", ""))}</span> '
         f'<span class="st {s}">{s}</span><br><span class="muted">polls {c["polls"]}, '
         f'errors {c["errors"]}, last good {_t(c.get("last_good_ms"))}</span>')
    if c.get("last_error"):
        h += f'<br><span class="bad">last error: {escape(c["last_error"])}</span>'
    h += '<table><tr><th>tag</th><th class="num">value</th><th>unit</th><th>quality</th></tr>'
    for tag, value in latest["values"].items():
        if tag in bad:
            # The device's own error is shown once above, not on every tag.
            why = "" if bad[tag] == c.get("last_error") else f": {escape(bad[tag])}"
            q = f'<span class="bad">bad{why}</span>'
        elif tag in unc:
            q = f'<span class="unc">uncertain: {escape(unc[tag])}</span>'
        else:
            q = "good"
        h += (f'<tr data-tag="{escape(tag)}"><td>{escape(tag)}</td>'
              f'<td class="num">{escape(_val(value))}</td>'
              f'<td>{escape(units.get(tag, ""))}</td><td>{q}</td></tr>')
    return h + "</table></div>"


def _sections(d: dict[str, Any]) -> str:
    u, b = d["uplink"], d["buffer"]
    link = "connected" if u["connected"] else "down"
    h = "<h2>Uplink</h2>" + _kv([
        ("broker", escape(d["broker"])),
        ("state", f'<span class="st {"up" if u["connected"] else "down"}">{link}</span>'),
        ("connected since", _t(u.get("connected_since_ms"))),
        ("backlog", f'{b["depth"]} batches'),
        ("sent / acked", f'{u["sent"]} / {u["acked"]}'),
        ("last error", f'<span class="bad">{escape(u.get("last_error") or "-")}</span>'),
    ])
    h += "<h2>Buffer</h2>" + _kv([
        ("batches", str(b["depth"])), ("size", _bytes(b["bytes"])),
        ("oldest", _age(b["oldest_age_s"])), ("dropped", f'{b["dropped_samples"]} samples'),
    ])
    h += "<h2>Devices</h2>"
    names = sorted(d["devices"])
    h += "".join(_device(n, d) for n in names) or '<p class="muted">no devices</p>'
    h += "<h2>Active alarms</h2>"
    if "alarms" not in d:
        h += '<p class="muted">not available on this agent</p>'
    elif not (rows := alarm_rows(d["alarms"])):
        h += '<p class="muted">none</p>'
    else:
        h += "<table>" + "".join(
            f'<tr><td>{escape(str(a["device"]))}</td>'
            f'<td>{escape(str(a.get("alarm") or ""))}</td>'
            f'<td>{escape(str(a.get("tag", "")))}</td><td>{escape(str(a.get("severity", "")))}</td>'
            f'<td class="num">{escape(_val(a.get("value")))}</td><td>{_t(a.get("since"))}</td></tr>'
            for a in rows) + "</table>"
    h += "<h2>Recent problems</h2>"
    problems = list(reversed(d.get("problems", [])))
    h += ("<table>" + "".join(
        f'<tr><td>{_t(p["ts_ms"])}</td><td class="bad">{escape(p["level"])}</td>'
        f'<td>{escape(p["message"])}</td></tr>' for p in problems) + "</table>"
    ) if problems else '<p class="muted">none</p>'
    return h


def render_page(d: dict[str, Any]) -> str:
    """The whole page for one ``/api/status`` snapshot."""
    gw = d.get("gateway", {})
    title = escape(f'{gw.get("id", "")} @ {gw.get("site", "")}')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>edge-agent {title}</title><style>{_STYLE}</style></head><body>"
        f"<h1>edge-agent {title}</h1>"
        f'<p class="muted">version {escape(str(d.get("version")))}, config '
        f'{escape(str(d.get("config_hash")))}, up {_age(d.get("uptime_s"))}; '
        f'<span id="updated" class="muted" data-refreshes="0">updated {_t(d.get("ts"))}</span></p>'
        f'<div id="main">{_sections(d)}</div>'
        f"<script>{_SCRIPT}</script></body></html>"
    )
