// Type declarations for the unifrost browser client (/unifrost.js, /unifrost.mjs).

export interface UnifrostMessage {
  topic: string;
  payload: string;
  /** The per-consumer event id ("1", "2", ...). */
  id: string | null;
}

export interface UnifrostInfo {
  config: {
    consumer_id: string;
    consumer_ttl_millis: number;
    heartbeat_millis?: number;
    retry_millis?: number;
    event_name?: 'message' | 'topic';
    last_event_id?: number;
    [key: string]: unknown;
  };
  subscriptions: string[];
}

export interface UnifrostError {
  /** Server codes: subscription-failure, broker-unavailable, broker-recovered,
   * messages-dropped, resume-gap. Client codes: consumer-expired, refused,
   * no-consumer, get-consumer-failed. */
  code: string;
  message: string;
  topic?: string;
  [key: string]: unknown;
}

export type UnifrostState = 'connecting' | 'open' | 'closed';

export interface SubscriptionsResult {
  consumer_id: string;
  subscriptions: string[];
  errors: { topic: string; code: string; message: string }[];
}

export interface UnifrostOptions {
  /** The stream URL; default '/events'. */
  url?: string;
  /** Default: the stream URL with /events replaced by /subscriptions. */
  subscriptionsUrl?: string;
  /** A consumer id the app backend handed to the page. */
  consumerId?: string;
  /** Asks the app backend for a consumer: at start without consumerId, and
   * whenever the consumer has expired. */
  getConsumer?: () => Promise<string | { consumer_id: string }> | string;
  /** Send cookies on cross-origin streams (the server must list the origin). */
  withCredentials?: boolean;
  /** Where the last event id is kept across reloads; default sessionStorage, null for none. */
  storage?: Storage | null;
  storageKey?: string;
}

export declare class UnifrostClient {
  constructor(options?: UnifrostOptions);
  constructor(url: string, consumerId: string);
  static connect(options: UnifrostOptions): UnifrostClient;

  readonly consumerId: string | null;
  readonly lastEventId: string | null;
  readonly state: UnifrostState;

  connect(): Promise<string | null>;
  close(): void;

  on(topic: string, handler: (payload: string, message: UnifrostMessage) => void): this;
  onMessage(handler: (message: UnifrostMessage) => void): this;
  onInfo(handler: (info: UnifrostInfo) => void): this;
  onError(handler: (error: UnifrostError) => void): this;
  onClosed(handler: (reason: string) => void): this;
  onState(handler: (state: UnifrostState) => void): this;

  updateSubscriptions(add?: string[], remove?: string[]): Promise<SubscriptionsResult>;
  subscribe(topics: string[]): Promise<SubscriptionsResult>;
  unsubscribe(topics: string[]): Promise<SubscriptionsResult>;
}

export default UnifrostClient;

declare global {
  interface Window {
    UnifrostClient: typeof UnifrostClient;
  }
}
