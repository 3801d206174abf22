// Renders a terminal screen captured with colours (`tmux capture-pane -p -e`) to a PNG, with
// the system's Chromium through playwright-core: the README's monit screenshots are made so.
//   MONIT_SCREENSHOTS=/tmp/shots cargo nextest run -E 'test(/monit_shows/)'
//   NODE_PATH=target/tmp/npm-playwright/node_modules node docs/tools/ansi-shot.js /tmp/shots/monit-200x50.ans docs/monit-200x50.png
const fs = require('fs');
const { chromium } = require('playwright-core');

const BASE = ['#1d2330', '#e05561', '#3fb950', '#d8a634', '#4a8fe7', '#c678dd', '#39c5cf', '#d0d4db',
              '#5c6370', '#ff7b86', '#7ee787', '#f2cc60', '#79b8ff', '#d2a8ff', '#56d4dd', '#ffffff'];
function color256(n) {
  if (n < 16) return BASE[n];
  if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
  n -= 16;
  const c = x => (x ? 55 + x * 40 : 0);
  return `rgb(${c(Math.floor(n / 36))},${c(Math.floor(n / 6) % 6)},${c(n % 6)})`;
}
const esc = s => s.replace(/[&<>]/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]);

// DEC line drawing (SO … SI), as blessed (pm2 monit) draws its boxes.
const ACS = { l: '┌', k: '┐', m: '└', j: '┘', q: '─', x: '│', t: '├', u: '┤', v: '┴', w: '┬', n: '┼' };

function toHtml(text) {
  let st = {}, out = '', acs = false;
  const open = () => {
    let fg = st.fg || '#d0d4db', bg = st.bg || 'transparent';
    if (st.rev) [fg, bg] = [st.bg || '#1d2330', st.fg || '#d0d4db'];
    return `<span style="color:${fg};background:${bg};${st.bold ? 'font-weight:bold;' : ''}${st.dim ? 'opacity:.7;' : ''}">`;
  };
  for (const part of text.split(/(\x1b\[[0-9;]*m|\x0e|\x0f)/)) {
    if (part === '\x0e' || part === '\x0f') { acs = part === '\x0e'; continue; }
    const m = part.match(/^\x1b\[([0-9;]*)m$/);
    if (!m) { if (part) out += open() + esc(acs ? part.replace(/[lkmjqxtuvwn]/g, c => ACS[c]) : part) + '</span>'; continue; }
    const a = m[1] === '' ? [0] : m[1].split(';').map(Number);
    for (let i = 0; i < a.length; i++) {
      const n = a[i];
      if (n === 0) st = {};
      else if (n === 1) st.bold = true; else if (n === 2) st.dim = true; else if (n === 22) st.bold = st.dim = false;
      else if (n === 7) st.rev = true; else if (n === 27) st.rev = false;
      else if (n >= 30 && n <= 37) st.fg = BASE[n - 30]; else if (n >= 90 && n <= 97) st.fg = BASE[n - 82]; else if (n === 39) delete st.fg;
      else if (n >= 40 && n <= 47) st.bg = BASE[n - 40]; else if (n >= 100 && n <= 107) st.bg = BASE[n - 92]; else if (n === 49) delete st.bg;
      else if ((n === 38 || n === 48) && a[i + 1] === 5) { st[n === 38 ? 'fg' : 'bg'] = color256(a[i + 2]); i += 2; }
      else if ((n === 38 || n === 48) && a[i + 1] === 2) { st[n === 38 ? 'fg' : 'bg'] = `rgb(${a[i + 2]},${a[i + 3]},${a[i + 4]})`; i += 4; }
    }
  }
  return out;
}

(async () => {
  const [input, output] = process.argv.slice(2);
  const html = `<html><body style="margin:0;background:#1d2330"><pre style="margin:0;padding:8px;font:14px/1.25 'DejaVu Sans Mono',monospace;color:#d0d4db;display:inline-block">${toHtml(fs.readFileSync(input, 'utf8').replace(/\n$/, ''))}</pre></body></html>`;
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  const page = await browser.newPage({ viewport: { width: 2000, height: 1200 } });
  await page.setContent(html);
  await (await page.$('pre')).screenshot({ path: output });
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
