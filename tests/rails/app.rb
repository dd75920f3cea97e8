# A one-file Rails application with Action Mailbox, run by tests/receivers.rs to receive
# pophook's `raw`, `postmark` and `mailgun` formats through Action Mailbox's own relay,
# Postmark and Mailgun ingresses. Everything per run comes from the environment:
#   INGRESS=relay|postmark|mailgun  PORT=…  TRIAL_DIR=… (database, storage, output)
#   RAILS_INBOUND_EMAIL_PASSWORD, MAILGUN_INGRESS_SIGNING_KEY (read by Action Mailbox)
# Each processed message is appended to $TRIAL_DIR/received.jsonl as what the mail gem
# parsed, for the test to compare with what was in the mailbox.
require "base64"
require "json"
require "rails"
require "active_record/railtie"
require "active_storage/engine"
require "action_controller/railtie"
require "active_job/railtie"
require "action_mailbox/engine"

DIR = File.expand_path(ENV.fetch("TRIAL_DIR"))

# SQLite takes one writer at a time and answers a second concurrent one with "database
# is locked" (a 500); pophook posts several messages at once, so requests take turns.
class OneAtATime
  LOCK = Mutex.new
  def initialize(app) = @app = app
  def call(env) = LOCK.synchronize { @app.call(env) }
end
ENV["DATABASE_URL"] = "sqlite3:#{File.join(DIR, "db.sqlite3")}"

class TrialApp < Rails::Application
  config.root = DIR
  config.eager_load = false
  config.logger = Logger.new($stdout)
  config.log_level = :info
  config.hosts.clear
  config.middleware.insert_before 0, OneAtATime
  config.secret_key_base = "pophook-test-only" * 4
  config.active_storage.service = :local
  config.active_storage.service_configurations = {
    local: { service: "Disk", root: File.join(DIR, "storage") },
  }
  config.action_mailbox.ingress = ENV.fetch("INGRESS").to_sym
  # Routing runs inside the request, so a message is recorded before the 204.
  config.active_job.queue_adapter = :inline
  # Incineration is scheduled for later, which the inline adapter cannot do.
  config.action_mailbox.incinerate = false
end

Rails.application.initialize!

# The tables of Action Mailbox's and Active Storage's migrations.
ActiveRecord::Migration.verbose = false
ActiveRecord::Schema.define do
  create_table :active_storage_blobs, force: true do |t|
    t.string :key, null: false
    t.string :filename, null: false
    t.string :content_type
    t.text :metadata
    t.string :service_name, null: false
    t.bigint :byte_size, null: false
    t.string :checksum, null: false
    t.datetime :created_at, null: false
  end
  create_table :active_storage_attachments, force: true do |t|
    t.string :name, null: false
    t.references :record, null: false, polymorphic: true, index: false
    t.references :blob, null: false
    t.datetime :created_at, null: false
  end
  create_table :active_storage_variant_records, force: true do |t|
    t.belongs_to :blob, null: false, index: false
    t.string :variation_digest, null: false
  end
  create_table :action_mailbox_inbound_emails, force: true do |t|
    t.integer :status, default: 0, null: false
    t.string :message_id, null: false
    t.string :message_checksum, null: false
    t.timestamps
  end
end

class ApplicationMailbox < ActionMailbox::Base
  routing all: :recording
end

class RecordingMailbox < ActionMailbox::Base
  def process
    address = ->(a) { { "name" => a.display_name, "address" => a.address } }
    record = {
      "ingress" => ENV["INGRESS"],
      "message_id" => mail.message_id,
      "subject" => mail.subject,
      "from" => mail[:from].addrs.map(&address),
      "to" => mail[:to].addrs.map(&address),
      "text" => (mail.text_part || mail).decoded,
      "attachments" => mail.attachments.map do |a|
        { "name" => a.filename, "content_type" => a.mime_type,
          "content_base64" => Base64.strict_encode64(a.decoded) }
      end,
      "source_base64" => Base64.strict_encode64(inbound_email.source),
    }
    File.open(File.join(DIR, "received.jsonl"), "a") { |f| f.puts(record.to_json) }
  end
end

require "webrick"
require "rack/handler/webrick"
Rack::Handler::WEBrick.run(Rails.application, Host: "127.0.0.1", Port: Integer(ENV.fetch("PORT")))
