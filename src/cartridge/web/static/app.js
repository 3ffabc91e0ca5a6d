/**
 * Cartridge web UI: play against the champion model and inspect its lineage.
 *
 * A single dependency-free ES module. Every URL is relative so the page keeps
 * working when a reverse proxy serves it under a path prefix.
 */

const NO_CHAMPION = 'No champion yet for this game: run the training pipeline first';
const OUTAGE = 'The game server is unavailable';
const ARROW_STEPS = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART = { width: 360, height: 200, left: 48, right: 20, top: 12, bottom: 36 };
const compactNumber = new Intl.NumberFormat(undefined, { notation: 'compact', maximumSignificantDigits: 3 });

const byId = (id) => document.getElementById(id);
const ui = {
  gameSelect: byId('game-select'),
  sideSelect: byId('side-select'),
  levelSelect: byId('level-select'),
  newGame: byId('new-game'),
  rules: byId('rules'),
  statusText: byId('status-text'),
  result: byId('result'),
  board: byId('board'),
  pass: byId('pass'),
  evaluation: byId('evaluation'),
  evaluationNote: byId('evaluation-note'),
  banner: byId('banner'),
  bannerMessage: byId('banner-message'),
  retry: byId('retry'),
  dismiss: byId('dismiss'),
  lineage: byId('lineage-body'),
  charts: byId('charts-body'),
};

const state = {
  games: [],
  game: null, // GameInfo of the selected game
  human: 0, // index of the player the human controls
  champion: undefined, // undefined: not loaded yet; null: no model trained yet
  position: null,
  pendingAction: null, // human move sent to the server and not yet confirmed
  thinking: false,
  botPassed: false,
  analysis: null, // { policy, value, modelVersion } of the latest bot move
  controller: null, // aborts the requests of an abandoned game
  focusAction: null, // board button that last had focus
  returnFocus: false, // the human played from the keyboard focus and should get it back
};

// DOM handles of the current board, rebuilt only when the game changes.
const view = { buttons: new Map(), stones: [] };

/* ---------- DOM helpers ---------- */

function h(tag, attributes = {}, ...children) {
  return build(document.createElement(tag), attributes, children);
}

// replaceChildren would render a skipped (false) child as the text "false".
function setChildren(element, ...children) {
  element.replaceChildren();
  build(element, {}, children);
}

function svg(tag, attributes = {}, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attributes, children);
}

// Attributes that are null or false are left out, which keeps call sites declarative.
function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value != null && value !== false) element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat(Infinity).filter((child) => child != null && child !== false));
  return element;
}

/* ---------- API ---------- */

class ApiError extends Error {
  constructor(message, { status = 0, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }

  // Outages and server errors may heal by themselves; a 4xx answer will not.
  get retryable() {
    return this.status === 0 || this.status >= 500;
  }
}

async function api(path, { body, signal } = {}) {
  const init = body === undefined
    ? { signal }
    : { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal };
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw error.name === 'AbortError' ? error : new ApiError(OUTAGE);
  }
  if (!response.ok) {
    const fallback = response.status >= 500 ? OUTAGE : `The request was refused (HTTP ${response.status}).`;
    throw new ApiError((await readDetail(response)) ?? fallback, {
      status: response.status,
      retryAfter: parseRetryAfter(response.headers.get('Retry-After')),
    });
  }
  try {
    return await response.json();
  } catch (error) {
    throw error.name === 'AbortError' ? error : new ApiError(OUTAGE);
  }
}

// Proxies answer 5xx with HTML, and validation errors carry a list: only a string detail is shown.
async function readDetail(response) {
  try {
    const { detail } = await response.json();
    return typeof detail === 'string' ? detail : null;
  } catch {
    return null;
  }
}

// Retry-After is either a number of seconds or an HTTP date (RFC 9110).
function parseRetryAfter(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/* ---------- Failures and retries ---------- */

// Failed retryable tasks by key, so a newer request replaces its stale copy.
const retry = { tasks: new Map(), timer: 0, failures: 0 };

/**
 * Runs a request task. A retryable failure keeps the task for the Retry button
 * and an automatic retry; any other failure is reported and `onGiveUp` undoes
 * what the caller had prepared (e.g. a move shown as pending).
 */
async function perform(key, task, onGiveUp) {
  retry.tasks.delete(key);
  try {
    await task();
    if (retry.tasks.size === 0) {
      retry.failures = 0;
      hideBanner();
    }
  } catch (error) {
    if (error.name === 'AbortError') return;
    if (!(error instanceof ApiError)) throw error;
    if (error.retryable) {
      retry.tasks.set(key, { task, onGiveUp });
      scheduleRetry(error);
    } else {
      onGiveUp?.();
      showBanner(error.message, { retryable: false });
    }
  }
}

function scheduleRetry(error) {
  clearTimeout(retry.timer);
  retry.failures += 1;
  // Honour the server's Retry-After; otherwise back off so a struggling server is not hammered.
  const seconds = error.retryAfter ?? Math.min(30, 2 ** retry.failures);
  retry.timer = setTimeout(retryNow, seconds * 1000);
  const reason = error.message.replace(/\.$/, '');
  showBanner(`${reason} — retrying in ${Math.ceil(seconds)} s…`, { retryable: true });
}

function retryNow() {
  clearTimeout(retry.timer);
  for (const [key, { task, onGiveUp }] of [...retry.tasks]) perform(key, task, onGiveUp);
}

function forgetRetry(key) {
  retry.tasks.delete(key);
  if (retry.tasks.size === 0) {
    clearTimeout(retry.timer);
    hideBanner();
  }
}

function showBanner(message, { retryable }) {
  ui.bannerMessage.textContent = message;
  ui.retry.hidden = !retryable;
  ui.dismiss.hidden = retryable;
  ui.banner.hidden = false;
}

function hideBanner() {
  ui.banner.hidden = true;
}

/* ---------- Game flow ---------- */

function boot() {
  perform('games', async () => {
    const { games } = await api('api/games');
    state.games = games;
    ui.gameSelect.replaceChildren(...games.map((game) => new Option(game.title, game.name)));
    if (games.length > 0) selectGame(games[0].name);
    else ui.statusText.textContent = 'No games are available on this server.';
  });
}

function selectGame(name) {
  state.game = state.games.find((game) => game.name === name);
  state.champion = undefined;
  ui.gameSelect.value = name;
  renderGameControls();
  buildBoard();
  renderLineage();
  ui.charts.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  newGame();
}

function newGame() {
  state.controller?.abort();
  const { signal } = (state.controller = new AbortController());
  forgetRetry('play');
  Object.assign(state, {
    human: Number(ui.sideSelect.value),
    position: null,
    pendingAction: null,
    thinking: false,
    botPassed: false,
    analysis: null,
  });
  render();
  loadStats();

  const { game } = state;
  // The champion is fetched again each game, so a freshly promoted model shows up.
  perform('play', async () => {
    const [lineage, position] = await Promise.all([
      api(`api/model/${encodeURIComponent(game.name)}`, { signal }),
      api('api/state', { body: { game: game.name, moves: [] }, signal }),
    ]);
    state.champion = lineage.champion;
    state.position = position;
    renderLineage();
    render();
    if (isBotTurn()) askBot();
  });
}

function playHuman(action) {
  if (!isHumanTurn() || !state.position.legal_actions.includes(action)) return;
  state.returnFocus = ui.board.contains(document.activeElement) || document.activeElement === ui.pass;
  state.pendingAction = action;
  state.botPassed = false;
  askBot();
}

function askBot() {
  const { game, position, pendingAction } = state;
  const { signal } = state.controller;
  const body = {
    game: game.name,
    moves: pendingAction === null ? position.moves : [...position.moves, pendingAction],
    level: Number(ui.levelSelect.value),
  };
  state.thinking = true;
  render();
  perform(
    'play',
    async () => applyReply(await api('api/move', { body, signal })),
    () => {
      // The server refused the move: return the board to the position before it.
      state.thinking = false;
      state.pendingAction = null;
      render();
    },
  );
}

function applyReply(reply) {
  const botMoved = reply.bot_move !== null;
  Object.assign(state, {
    position: reply.position,
    pendingAction: null,
    thinking: false,
    botPassed: botMoved && reply.bot_move === state.game.pass_action,
    // With no bot move (the human ended the game) the policy describes nothing.
    analysis: botMoved ? { policy: reply.policy, value: reply.value, modelVersion: reply.model_version } : null,
  });
  render();
  // Only a reply that moved can hand the turn back to the bot; this guard prevents a request loop.
  if (botMoved && isBotTurn()) askBot();
}

function loadStats() {
  const { game } = state;
  perform('stats', async () => {
    const stats = await api(`api/stats/${encodeURIComponent(game.name)}`);
    if (state.game === game) renderCharts(stats);
  });
}

function isHumanTurn() {
  const { champion, position, thinking, human } = state;
  return Boolean(champion && position && !position.over && !thinking && position.to_play === human);
}

function isBotTurn() {
  const { champion, position, human } = state;
  return Boolean(champion && position && !position.over && position.to_play !== human);
}

function mustPass() {
  const legal = state.position?.legal_actions ?? [];
  return state.game.pass_action !== null && legal.length === 1 && legal[0] === state.game.pass_action;
}

/* ---------- Board geometry ---------- */

// Column buttons of drop games sit side by side, as if in one row.
function gridCell(action) {
  const { cols, drop_columns: dropColumns } = state.game;
  return dropColumns ? { row: 0, col: action } : { row: Math.floor(action / cols), col: action % cols };
}

// Lowest empty row of a column (row 0 is the top), or -1 when the column is full.
function landingRow(board, col) {
  for (let row = board.length - 1; row >= 0; row -= 1) {
    if (board[row][col] === 0) return row;
  }
  return -1;
}

function lastMoveCell(position) {
  const action = position?.moves.at(-1);
  if (action === undefined || action === state.game.pass_action) return null;
  // In a drop game the latest disc of a column is its topmost one.
  if (state.game.drop_columns) return { row: position.board.findIndex((row) => row[action] !== 0), col: action };
  return gridCell(action);
}

function pendingCell(board) {
  const action = state.pendingAction;
  if (action === null || action === state.game.pass_action) return null;
  return state.game.drop_columns ? { row: landingRow(board, action), col: action } : gridCell(action);
}

function emptyBoard({ rows, cols }) {
  return Array.from({ length: rows }, () => Array(cols).fill(0));
}

/* ---------- Rendering ---------- */

function renderGameControls() {
  const { game } = state;
  const side = ui.sideSelect.value || '0';
  ui.sideSelect.replaceChildren(new Option(`${game.players[0]} (moves first)`, '0'), new Option(game.players[1], '1'));
  ui.sideSelect.value = side;
  ui.levelSelect.replaceChildren(...game.levels.map((level) => new Option(`${level} simulations`, String(level))));
  ui.levelSelect.value = String(game.default_level);
  ui.rules.textContent = game.rules;
  ui.newGame.disabled = false;
}

function buildBoard() {
  const { game } = state;
  view.buttons.clear();
  view.stones = Array.from({ length: game.rows }, () => []);
  ui.board.dataset.game = game.name;
  ui.board.classList.toggle('board--columns', game.drop_columns);
  ui.board.style.setProperty('--rows', game.rows);
  ui.board.style.setProperty('--cols', game.cols);
  ui.board.setAttribute('aria-label', `${game.title} board`);

  const button = (className, action, children) => {
    const element = h('button', { type: 'button', class: className, 'data-action': action }, children);
    view.buttons.set(action, element);
    return element;
  };
  const stone = (row) => {
    const element = h('span', { class: 'stone' });
    view.stones[row].push(element);
    return element;
  };
  const probability = () => h('span', { class: 'prob', 'aria-hidden': 'true' });

  const buttons = [];
  if (game.drop_columns) {
    for (let col = 0; col < game.cols; col += 1) {
      const slots = Array.from({ length: game.rows }, (_, row) => stone(row));
      buttons.push(button('column', col, [probability(), slots]));
    }
  } else {
    for (let row = 0; row < game.rows; row += 1) {
      for (let col = 0; col < game.cols; col += 1) {
        buttons.push(button('cell', row * game.cols + col, [stone(row), probability()]));
      }
    }
  }
  ui.board.replaceChildren(...buttons);
}

function render() {
  if (!state.game) return;
  renderBoard();
  renderStatus();
  restoreFocus();
}

function renderBoard() {
  const { game, position } = state;
  const board = position?.board ?? emptyBoard(game);
  const last = lastMoveCell(position);
  const pending = pendingCell(board);
  const landing = Array.from({ length: game.cols }, (_, col) => landingRow(board, col));

  for (let row = 0; row < game.rows; row += 1) {
    for (let col = 0; col < game.cols; col += 1) {
      const stone = view.stones[row][col];
      const isPending = pending?.row === row && pending?.col === col;
      setPlayer(stone, isPending ? state.human : board[row][col] - 1);
      stone.classList.toggle('is-pending', isPending);
      stone.classList.toggle('is-last', last?.row === row && last?.col === col);
      stone.classList.toggle('is-next', game.drop_columns && landing[col] === row);
    }
  }

  const humanTurn = isHumanTurn();
  const legal = new Set(position?.legal_actions ?? []);
  // The policy explains the bot's last decision; once the human moves it is stale.
  const policy = state.pendingAction === null ? state.analysis?.policy : null;
  for (const [action, button] of view.buttons) {
    const share = policy?.[action] ?? 0;
    const shown = share >= 0.005;
    button.disabled = !(humanTurn && legal.has(action));
    button.querySelector('.prob').textContent = shown ? formatPercent(share) : '';
    button.setAttribute('aria-label', describeAction(action, board, last, shown ? share : 0));
  }

  ui.board.dataset.human = state.human;
  ui.board.setAttribute('aria-busy', String(state.thinking));
  ui.pass.hidden = !(humanTurn && mustPass());
}

// Player 0 or 1, or -1 for an empty cell.
function setPlayer(stone, player) {
  if (player < 0) {
    delete stone.dataset.player;
    delete stone.dataset.mark;
  } else {
    stone.dataset.player = player;
    stone.dataset.mark = state.game.players[player]; // drawn by CSS for games with text marks
  }
}

function describeAction(action, board, last, share) {
  const { game } = state;
  const parts = [];
  if (game.drop_columns) {
    const free = landingRow(board, action) + 1;
    parts.push(`column ${action + 1}`, free > 0 ? `${free} of ${game.rows} free` : 'full');
    if (last?.col === action) parts.push('last move');
  } else {
    const { row, col } = gridCell(action);
    const value = board[row][col];
    parts.push(`row ${row + 1} column ${col + 1}`, value ? game.players[value - 1] : 'empty');
    if (last?.row === row && last?.col === col) parts.push('last move');
  }
  if (share) parts.push(`bot's probability ${formatPercent(share)}`);
  return parts.join(', ');
}

function renderStatus() {
  const { analysis } = state;
  ui.statusText.textContent = statusText();
  ui.result.textContent = resultText();
  ui.evaluation.textContent = analysis ? `Bot's evaluation: ${formatSigned(analysis.value, 2)}` : '';
  ui.evaluationNote.textContent = analysis
    ? `(+1: the bot expects to win, −1: to lose; model v${analysis.modelVersion})`
    : '';
}

function statusText() {
  const { game, position, champion } = state;
  if (champion === null) return NO_CHAMPION;
  if (!position || champion === undefined) return 'Loading…';
  if (position.over) {
    return position.winner === null ? 'Game over: draw.' : `Game over: ${game.players[position.winner]} wins.`;
  }
  if (state.thinking) return 'Thinking…';
  if (position.to_play !== state.human) return 'Waiting for the bot…';
  const passed = state.botPassed ? 'The bot had no legal move and passed. ' : '';
  return passed + (mustPass() ? 'You have no legal move: press Pass.' : `Your move (${game.players[state.human]}).`);
}

function resultText() {
  const { position, human } = state;
  if (!position?.over) return '';
  if (position.winner === null) return 'Draw.';
  return position.winner === human ? 'You win!' : 'You lose.';
}

// Keyboard players lose focus while the board is disabled; hand it back when it is their turn.
function restoreFocus() {
  if (!state.returnFocus) return;
  if (state.position?.over) {
    state.returnFocus = false;
    ui.newGame.focus();
  } else if (isHumanTurn()) {
    state.returnFocus = false;
    (ui.pass.hidden ? nearestEnabled(state.focusAction) : ui.pass)?.focus();
  }
}

/* ---------- Champion panel ---------- */

function renderLineage() {
  const { champion } = state;
  if (champion === undefined) {
    ui.lineage.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    return;
  }
  if (champion === null) {
    ui.lineage.replaceChildren(h('p', { class: 'notice' }, NO_CHAMPION));
    return;
  }
  const { arena, triton } = champion;
  const facts = [
    ['Version', champion.version],
    ['Promoted', formatDate(champion.promoted_at)],
    ['Arena score', arena && `${arena.score.toFixed(3)} (95% CI ${arena.ci95[0].toFixed(2)}–${arena.ci95[1].toFixed(2)})`],
    ['Record', arena && `${arena.wins} W / ${arena.draws} D / ${arena.losses} L in ${arena.games} games vs ${arena.opponent}`],
    ['Elo', arena?.elo != null && formatSigned(arena.elo, 0)],
    ['Solver-optimal moves', arena?.solver_optimal_fraction != null && formatPercent(arena.solver_optimal_fraction)],
    ['Gate', arena?.gate],
    ['Training run', champion.run_url ? externalLink(champion.run_url, 'Open in MLflow') : champion.run_id],
    ['Registry', champion.registry_url && externalLink(champion.registry_url, 'Model registry')],
    ['Serving', triton && describeServing(champion)],
  ].filter(([, value]) => value != null && value !== false && value !== '');

  const parameters = Object.entries(champion.parameters ?? {});
  setChildren(
    ui.lineage,
    factList(facts),
    parameters.length > 0 && h('details', {}, h('summary', {}, 'Training parameters'), factList(parameters)),
  );
}

function factList(entries) {
  return h('dl', { class: 'facts' }, entries.map(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

function externalLink(href, text) {
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, text);
}

// What Triton serves against the registry's champion: the two differ for a moment after
// an alias moves (until the reconciler's pass) or for good when a version was refused.
function describeServing({ version: champion, triton, in_sync: inSync, serving_refused: refused }) {
  const { model, version, state: modelState } = triton;
  const served = `${model}${version ? ` v${version}` : ''} `;
  if (refused) {
    return [served, h('span', { class: 'badge badge--warn', title: refused }, `v${champion} refused`)];
  }
  if (inSync === false) {
    return [served, h('span', { class: 'badge badge--warn' }, `updating to v${champion}`)];
  }
  const badge = modelState === 'READY' ? 'badge--ok' : 'badge--warn';
  return [served, h('span', { class: `badge ${badge}` }, modelState ?? 'not loaded')];
}

function formatDate(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return h('time', { datetime: iso }, date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }));
}

/* ---------- Training charts ---------- */

function renderCharts(stats) {
  const training = stats.training ?? {};
  const arena = stats.arena ?? [];
  // Versions are strings; fall back to the list order if one is not numeric.
  const arenaPoints = (key) => arena
    .map((entry, index) => [Number(entry.version) || index + 1, entry[key], entry.champion])
    .filter(([, value]) => value != null);
  const champions = new Set(arena.filter((entry) => entry.champion).map((entry) => entry.version));
  const ratingPoints = (key) => (stats.ratings ?? [])
    .map((entry) => [Number(entry.version), entry[key], champions.has(entry.version)]);
  setChildren(
    ui.charts,
    lineChart({
      title: 'Training loss',
      xLabel: 'training step',
      series: [
        { label: 'total', points: training.loss ?? [] },
        { label: 'policy', points: training.policy_loss ?? [] },
        { label: 'value', points: training.value_loss ?? [] },
      ],
    }),
    lineChart({
      title: 'Arena score',
      xLabel: 'model version',
      series: [
        { label: 'score', points: arenaPoints('score') },
        { label: 'solver-optimal share', points: arenaPoints('solver_optimal_fraction') },
      ],
    }),
    // Ratings fitted over every stored arena game (random = 0), with 95% intervals;
    // a gate match's own Elo only says how the challenger did against its opponent.
    lineChart({
      title: 'Rating (Elo, random = 0)',
      xLabel: 'model version',
      series: [
        { label: 'rating', points: ratingPoints('elo') },
        { label: '95% low', points: ratingPoints('low') },
        { label: '95% high', points: ratingPoints('high') },
      ],
    }),
    arena.length > 0 && h('p', { class: 'muted' }, 'Ringed points are models that became champion.'),
  );
}

/**
 * Draws series of [x, y, highlighted?] points as an inline SVG line chart
 * with min/max labels on both axes.
 */
function lineChart({ title, xLabel, series }) {
  const figure = h('figure', { class: 'chart' }, h('figcaption', {}, title));
  const points = series.flatMap((line) => line.points);
  if (points.length === 0) {
    figure.append(h('p', { class: 'no-data' }, 'no data yet'));
    return figure;
  }

  const { width, height, left, right, top, bottom } = CHART;
  const [xMin, xMax] = extent(points.map(([x]) => x));
  const [yMin, yMax] = extent(points.map(([, y]) => y));
  const toX = linear(xMin, xMax, left, width - right);
  const toY = linear(yMin, yMax, height - bottom, top);
  const tick = (x, y, anchor, value) => svg('text', { class: 'tick', x, y, 'text-anchor': anchor }, compactNumber.format(value));

  figure.append(
    svg(
      'svg',
      { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': summarizeChart(title, series) },
      svg('path', { class: 'axis', d: `M${left},${top} V${height - bottom} H${width - right}` }),
      [yMin, yMax].map((value) => tick(left - 6, toY(value) + 4, 'end', value)),
      [xMin, xMax].map((value) => tick(toX(value), height - bottom + 16, 'middle', value)),
      svg('text', { class: 'tick', x: (left + width - right) / 2, y: height - 4, 'text-anchor': 'middle' }, xLabel),
      series.map((line, index) => plotSeries(line, `series-${index}`, toX, toY)),
    ),
  );
  if (series.length > 1) {
    figure.append(h('ul', { class: 'legend' }, series.map((line, index) => h(
      'li',
      { class: `series-${index}` },
      line.label,
      line.points.length === 0 && h('span', { class: 'muted' }, ' (no data yet)'),
    ))));
  }
  return figure;
}

function plotSeries({ label, points }, colorClass, toX, toY) {
  if (points.length === 0) return null;
  const path = svg('polyline', { class: `line ${colorClass}`, points: points.map(([x, y]) => `${toX(x)},${toY(y)}`).join(' ') });
  // Dense series read better as a bare line; sparse ones (arena) need visible points.
  if (points.length > 40) return path;
  const markers = points.map(([x, y, highlighted]) => svg(
    'circle',
    { class: `marker ${colorClass}${highlighted ? ' is-highlighted' : ''}`, cx: toX(x), cy: toY(y), r: highlighted ? 4.5 : 3 },
    svg('title', {}, `${label} at ${compactNumber.format(x)}: ${compactNumber.format(y)}`),
  ));
  return [path, markers];
}

function summarizeChart(title, series) {
  const parts = series.map(({ label, points }) => (points.length === 0
    ? `${label}: no data yet`
    : `${label} from ${compactNumber.format(points[0][1])} to ${compactNumber.format(points.at(-1)[1])}`));
  return `${title}: ${parts.join('; ')}`;
}

function extent(values) {
  return [Math.min(...values), Math.max(...values)];
}

// A single value (min equals max) is drawn in the middle of the range.
function linear(domainMin, domainMax, rangeMin, rangeMax) {
  if (domainMin === domainMax) return () => (rangeMin + rangeMax) / 2;
  return (value) => rangeMin + ((value - domainMin) / (domainMax - domainMin)) * (rangeMax - rangeMin);
}

/* ---------- Formatting ---------- */

function formatPercent(share) {
  return `${Math.round(share * 100)}%`;
}

// "+0.35", "-0.20", and "0.00" rather than "-0.00".
function formatSigned(value, digits) {
  const magnitude = Math.abs(value).toFixed(digits);
  if (Number(magnitude) === 0) return magnitude;
  return `${value > 0 ? '+' : '-'}${magnitude}`;
}

/* ---------- Input ---------- */

function onBoardClick(event) {
  const button = event.target.closest('[data-action]');
  if (button && !button.disabled) playHuman(Number(button.dataset.action));
}

// Arrow keys move to the nearest playable button in that direction, skipping disabled ones.
function onBoardKeydown(event) {
  const step = ARROW_STEPS[event.key];
  const from = event.target.closest('[data-action]');
  if (!step || !from) return;
  event.preventDefault();
  const origin = gridCell(Number(from.dataset.action));
  const [dRow, dCol] = step;
  let best = null;
  let bestScore = Infinity;
  for (const [action, button] of view.buttons) {
    if (button.disabled) continue;
    const { row, col } = gridCell(action);
    const along = (row - origin.row) * dRow + (col - origin.col) * dCol;
    const across = dRow !== 0 ? Math.abs(col - origin.col) : Math.abs(row - origin.row);
    const score = along + 2 * across; // prefer staying in the same row or column
    if (along > 0 && score < bestScore) {
      best = button;
      bestScore = score;
    }
  }
  best?.focus();
}

// Digit keys drop a disc in Connect 4 columns 1..n from anywhere but a form field.
function onDigitKey(event) {
  const { game } = state;
  if (!game?.drop_columns || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.target.closest?.('select, input, textarea')) return;
  const column = Number(event.key) - 1;
  if (!Number.isInteger(column) || column < 0 || column >= game.cols) return;
  event.preventDefault();
  playHuman(column);
}

function rememberFocus(event) {
  const button = event.target.closest('[data-action]');
  if (button) state.focusAction = Number(button.dataset.action);
}

function nearestEnabled(action) {
  const origin = action === null ? { row: 0, col: 0 } : gridCell(action);
  let best = null;
  let bestDistance = Infinity;
  for (const [candidate, button] of view.buttons) {
    if (button.disabled) continue;
    const { row, col } = gridCell(candidate);
    const distance = Math.abs(row - origin.row) + Math.abs(col - origin.col);
    if (distance < bestDistance) {
      best = button;
      bestDistance = distance;
    }
  }
  return best;
}

function wireEvents() {
  ui.gameSelect.addEventListener('change', () => selectGame(ui.gameSelect.value));
  ui.sideSelect.addEventListener('change', newGame);
  ui.newGame.addEventListener('click', newGame);
  ui.board.addEventListener('click', onBoardClick);
  ui.board.addEventListener('keydown', onBoardKeydown);
  ui.board.addEventListener('focusin', rememberFocus);
  ui.pass.addEventListener('click', () => playHuman(state.game.pass_action));
  ui.retry.addEventListener('click', retryNow);
  ui.dismiss.addEventListener('click', hideBanner);
  document.addEventListener('keydown', onDigitKey);
}

wireEvents();
boot();
