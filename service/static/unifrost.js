/*
 * unifrost browser client: EventSource plus what a unifrost stream needs.
 *
 *   var client = new UnifrostClient({
 *     url: '/events',                     // or 'https://sse.example.com/events'
 *     consumerId: 'id-from-your-backend', // and/or:
 *     getConsumer: function () {          // asks your backend for a (new) consumer
 *       return fetch('/api/unifrost-consumer', { method: 'POST' })
 *         .then(function (r) { return r.json(); });  // a string or {consumer_id}
 *     },
 *   });
 *   client.on('orders', function (payload, message) { ... });  // one topic
 *   client.onMessage(function (message) { ... });  // every topic: {topic, payload, id}
 *   client.onInfo(function (info) { ... });        // {config, subscriptions}
 *   client.onError(function (error) { ... });      // {code, message, topic, ...}
 *   client.onClosed(function (reason) { ... });    // 'consumer closed', 'replaced', ...
 *   client.onState(function (state) { ... });      // 'connecting' | 'open' | 'closed'
 *   client.connect();
 *   client.subscribe(['chat/lobby']);              // POST /subscriptions, when enabled
 *   client.close();
 *
 * Resuming: inside one page the browser reconnects by itself and sends
 * Last-Event-ID, so the server replays what was missed. Across a reload the
 * last event id (and the consumer id) is kept in sessionStorage and sent as
 * ?last_event_id=. When the consumer has expired (404), getConsumer is asked
 * for a new one. No dependencies; a plain script (window.UnifrostClient),
 * CommonJS, or an ES module from /unifrost.mjs.
 */
(function (root) {
  'use strict';

  var INFO = '/unifrost/info';
  var ERROR = '/unifrost/error';
  var CLOSED = '/unifrost/closed';
  // After these the server will not serve this stream again: stop.
  var FINAL = { 'consumer closed': true, replaced: true };
  var DEFAULT_RETRY_MS = 3000;

  function UnifrostClient(options) {
    if (typeof options === 'string') options = { url: options, consumerId: arguments[1] };
    options = options || {};
    this.url = options.url || '/events';
    this.subscriptionsUrl = options.subscriptionsUrl ||
      this.url.replace(/\/events(\?.*)?$/, '/subscriptions');
    this.getConsumer = options.getConsumer || null;
    this.withCredentials = !!options.withCredentials;
    this.storage = options.storage === undefined ? safeSessionStorage() : options.storage;
    this.storageKey = options.storageKey || 'unifrost:' + this.url;
    this.consumerId = options.consumerId || null;
    this.lastEventId = null;
    this.retryMs = DEFAULT_RETRY_MS;
    this.state = 'closed';
    this.source = null;
    this.stopped = true;
    this.timer = null;
    this.handlers = { message: [], info: [], error: [], closed: [], state: [] };
    this.topicHandlers = {};
    this.namedTopics = {};  // topics delivered as their own event (event_name: topic)
    this.restore();
  }

  // --- callbacks -----------------------------------------------------------------------

  /** Calls handler(payload, message) for each message of `topic`. */
  UnifrostClient.prototype.on = function (topic, handler) {
    (this.topicHandlers[topic] = this.topicHandlers[topic] || []).push(handler);
    if (this.source) this.listenTo(topic);
    return this;
  };
  UnifrostClient.prototype.onMessage = function (h) { this.handlers.message.push(h); return this; };
  UnifrostClient.prototype.onInfo = function (h) { this.handlers.info.push(h); return this; };
  UnifrostClient.prototype.onError = function (h) { this.handlers.error.push(h); return this; };
  UnifrostClient.prototype.onClosed = function (h) { this.handlers.closed.push(h); return this; };
  UnifrostClient.prototype.onState = function (h) { this.handlers.state.push(h); return this; };

  UnifrostClient.prototype.emit = function (kind, value) {
    this.handlers[kind].forEach(function (handler) { handler(value); });
  };

  UnifrostClient.prototype.setState = function (state) {
    if (state === this.state) return;
    this.state = state;
    this.emit('state', state);
  };

  // --- connecting ----------------------------------------------------------------------

  /** Opens the stream; returns a promise settled once a stream is being opened. */
  UnifrostClient.prototype.connect = function () {
    this.stopped = false;
    this.setState('connecting');
    if (this.consumerId) {
      this.open();
      return Promise.resolve(this.consumerId);
    }
    return this.renewConsumer();
  };

  UnifrostClient.prototype.open = function () {
    var self = this;
    this.closeSource();
    var url = this.url + (this.url.indexOf('?') < 0 ? '?' : '&') +
      'id=' + encodeURIComponent(this.consumerId);
    if (this.lastEventId !== null) url += '&last_event_id=' + encodeURIComponent(this.lastEventId);
    var source = new EventSource(url, { withCredentials: this.withCredentials });
    this.source = source;
    source.onopen = function () { self.setState('open'); };
    source.onerror = function () {
      if (self.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        self.source = null;
        self.refused();
      } else {
        self.setState('connecting');  // the browser retries after the server's retry:
      }
    };
    source.addEventListener('message', function (event) { self.handle(event); });
    Object.keys(this.topicHandlers).forEach(function (t) { self.listenTo(t); });
    Object.keys(this.namedTopics).forEach(function (t) { self.listenTo(t); });
  };

  // With `event_name: topic` on the server, topic messages arrive as events named
  // after their topic rather than "message": listen to each topic as well.
  UnifrostClient.prototype.listenTo = function (topic) {
    var self = this;
    var source = this.source;
    if (topic === 'message' || !source || (source.topics = source.topics || {})[topic]) return;
    source.topics[topic] = true;
    source.addEventListener(topic, function (event) { self.handle(event); });
  };

  // The browser gave up: the server answered with something other than a stream.
  // Ask why with an ordinary request, then renew the consumer, retry, or stop.
  UnifrostClient.prototype.refused = function () {
    var self = this;
    var probe = this.url + (this.url.indexOf('?') < 0 ? '?' : '&') +
      'id=' + encodeURIComponent(this.consumerId) + '&last_event_id=' + (this.lastEventId || 0);
    var abort = typeof AbortController === 'function' ? new AbortController() : null;
    fetch(probe, {
      credentials: this.withCredentials ? 'include' : 'same-origin',
      signal: abort && abort.signal,
    }).then(function (response) {
      if (abort) abort.abort();  // a 200 is a stream: we only wanted the status
      return response.status;
    }, function () { return 0; }).then(function (status) {
      if (self.stopped) return;
      if (status === 404) {
        self.emit('error', { code: 'consumer-expired', message: 'the consumer no longer exists' });
        if (self.getConsumer) {
          self.consumerId = null;
          self.later(function () { self.renewConsumer(); });
        } else {
          self.stop();
        }
      } else if (status === 400 || status === 401 || status === 403) {
        self.emit('error', { code: 'refused', message: 'the server refused the stream (' + status + ')' });
        self.stop();
      } else {
        self.later(function () { self.open(); });  // unavailable or unreachable: retry
      }
    });
  };

  UnifrostClient.prototype.renewConsumer = function () {
    var self = this;
    if (!this.getConsumer) {
      var problem = new Error('UnifrostClient needs consumerId or getConsumer');
      this.emit('error', { code: 'no-consumer', message: problem.message });
      this.stop();
      return Promise.reject(problem);
    }
    this.setState('connecting');
    return Promise.resolve().then(function () { return self.getConsumer(); }).then(function (answer) {
      var id = answer && typeof answer === 'object' ? answer.consumer_id : answer;
      if (!id) throw new Error('getConsumer returned no consumer id');
      if (self.stopped) return id;
      self.consumerId = String(id);
      self.lastEventId = null;  // ids are per consumer: a new one starts at 1
      self.save();
      self.open();
      return id;
    }).catch(function (problem) {
      if (self.stopped) return null;
      self.emit('error', { code: 'get-consumer-failed', message: String(problem && problem.message || problem) });
      self.later(function () { self.renewConsumer(); });
      return null;
    });
  };

  // Waits about the server's retry interval (with jitter, so that many pages
  // do not come back at the same instant), then runs `next` unless stopped.
  UnifrostClient.prototype.later = function (next) {
    var self = this;
    this.setState('connecting');
    clearTimeout(this.timer);
    this.timer = setTimeout(function () {
      if (!self.stopped) next();
    }, this.retryMs * (0.5 + Math.random()));
  };

  // --- frames --------------------------------------------------------------------------

  UnifrostClient.prototype.handle = function (event) {
    var frame;
    try { frame = JSON.parse(event.data); } catch (e) { return; }
    if (!Array.isArray(frame) || frame.length !== 2) return;
    var topic = frame[0];
    var payload = frame[1];
    if (topic === INFO) {
      var info = JSON.parse(payload);
      var config = info.config || {};
      if (config.retry_millis) this.retryMs = config.retry_millis;
      if (config.event_name === 'topic') this.listenToAll(info.subscriptions || []);
      this.emit('info', info);
    } else if (topic === ERROR) {
      this.emit('error', JSON.parse(payload).error);
    } else if (topic === CLOSED) {
      if (FINAL[payload]) this.stop();
      this.emit('closed', payload);
    } else {
      var message = { topic: topic, payload: payload, id: event.lastEventId || null };
      if (message.id) {
        this.lastEventId = message.id;
        this.save();
      }
      (this.topicHandlers[topic] || []).forEach(function (handler) { handler(payload, message); });
      this.emit('message', message);
    }
  };

  UnifrostClient.prototype.listenToAll = function (topics) {
    var self = this;
    topics.forEach(function (topic) {
      self.namedTopics[topic] = true;
      self.listenTo(topic);
    });
  };

  // --- subscriptions -------------------------------------------------------------------

  /** POST /subscriptions (needs client subscriptions enabled on the server). */
  UnifrostClient.prototype.updateSubscriptions = function (add, remove) {
    var self = this;
    return fetch(this.subscriptionsUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      credentials: this.withCredentials ? 'include' : 'same-origin',
      body: JSON.stringify({ consumer_id: this.consumerId, add: add || [], remove: remove || [] }),
    }).then(function (response) {
      return response.json().then(function (body) {
        if (!response.ok) {
          var error = new Error((body.error && body.error.message) || 'HTTP ' + response.status);
          error.status = response.status;
          error.body = body;
          throw error;
        }
        if (self.namedTopics && Object.keys(self.namedTopics).length) self.listenToAll(body.subscriptions);
        return body;  // {consumer_id, subscriptions, errors}
      });
    });
  };
  UnifrostClient.prototype.subscribe = function (topics) { return this.updateSubscriptions(topics, []); };
  UnifrostClient.prototype.unsubscribe = function (topics) { return this.updateSubscriptions([], topics); };

  // --- resume across reloads -----------------------------------------------------------

  UnifrostClient.prototype.restore = function () {
    var saved = null;
    try { saved = this.storage && JSON.parse(this.storage.getItem(this.storageKey)); } catch (e) { saved = null; }
    if (!saved || !saved.consumerId) return;
    if (!this.consumerId && this.getConsumer) this.consumerId = saved.consumerId;
    if (saved.consumerId === this.consumerId) this.lastEventId = saved.lastEventId || null;
  };

  UnifrostClient.prototype.save = function () {
    if (!this.storage) return;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify({
        consumerId: this.consumerId, lastEventId: this.lastEventId,
      }));
    } catch (e) { /* storage full or denied: resume within the page still works */ }
  };

  function safeSessionStorage() {
    try { return root.sessionStorage || null; } catch (e) { return null; }
  }

  // --- stopping ------------------------------------------------------------------------

  UnifrostClient.prototype.closeSource = function () {
    if (this.source) this.source.close();
    this.source = null;
  };

  UnifrostClient.prototype.stop = function () {
    this.stopped = true;
    clearTimeout(this.timer);
    this.closeSource();
    this.setState('closed');
  };

  /** Closes the stream for good (the consumer lives on until its TTL). */
  UnifrostClient.prototype.close = UnifrostClient.prototype.stop;

  UnifrostClient.connect = function (options) {
    var client = new UnifrostClient(options);
    client.connect();
    return client;
  };

  root.UnifrostClient = UnifrostClient;
  if (typeof module === 'object' && module.exports) module.exports = UnifrostClient;
})(typeof globalThis !== 'undefined' ? globalThis : this);
